"""The other spellings under which the host's key maps may know a file's module (tried in order)."""

from __future__ import annotations

import re

# Spellings of one module that the host's key maps may know under another name (tried in order).
_ALIASES: tuple[tuple[re.Pattern, str], ...] = (
    # diffusers/PEFT attention in a UNet: the host only maps the old attention-processor names.
    (re.compile(r"^(unet\..*)\.(to_[qkv])$"), r"\1.processor.\2"),
    (re.compile(r"^(unet\..*)\.to_out\.0$"), r"\1.processor.to_out"),
    # transformers ≥ 5.6 dropped CLIPTextModel's `text_model` wrapper; producers on it write keys without it.
    (re.compile(r"^(text_encoder(?:_2)?)\.encoder\.layers\."), r"\1.text_model.encoder.layers."),
    (re.compile(r"^(lora_te\d?)_encoder_layers_"), r"\1_text_model_encoder_layers_"),
    # Wan Fun files carry a doubled underscore (`lora_unet__blocks_0_…`); the host converts them the same way.
    (re.compile(r"^lora_unet__"), "lora_unet_"),
    # kohya's networks.oft names its modules like LoRA ones, under another prefix.
    (re.compile(r"^oft_unet_"), "lora_unet_"),
    # PEFT's wrapper prefix (SimpleTuner, fal, old reference scripts) in front of a diffusers path.
    (re.compile(r"^(?:transformer\.)?base_model\.model\."), "transformer."),
    (re.compile(r"^unet\.base_model\.model\."), "unet."),
    # XLabs: lora1 is the image stream, lora2 the text stream; single blocks adapt linear1's qkv rows only.
    (re.compile(r"^(double_blocks\.\d+)\.processor\.qkv_lora1$"), r"diffusion_model.\1.img_attn.qkv"),
    (re.compile(r"^(double_blocks\.\d+)\.processor\.proj_lora1$"), r"diffusion_model.\1.img_attn.proj"),
    (re.compile(r"^(double_blocks\.\d+)\.processor\.qkv_lora2$"), r"diffusion_model.\1.txt_attn.qkv"),
    (re.compile(r"^(double_blocks\.\d+)\.processor\.proj_lora2$"), r"diffusion_model.\1.txt_attn.proj"),
    (re.compile(r"^(single_blocks\.\d+)\.processor\.qkv_lora$"), r"diffusion_model.\1.linear1_qkv"),
    (re.compile(r"^(single_blocks\.\d+)\.processor\.proj_lora$"), r"diffusion_model.\1.linear2"),
    # Native (BFL, DiffSynth, musubi) names without any prefix: the host maps them under `diffusion_model.`.
    (re.compile(r"^(?!diffusion_model\.|lora_|lycoris_|unet\.|text_encoder|transformer\.|base_model\.)(.+)$"),
     r"diffusion_model.\1"),
)


def key_candidates(module_key: str) -> list[str]:
    """The module key itself, then the other spellings under which the host may map the same layer."""
    candidates = [module_key]
    for pattern, replacement in _ALIASES:
        alias = pattern.sub(replacement, module_key)
        if alias != module_key and alias not in candidates:
            candidates.append(alias)
    return candidates
