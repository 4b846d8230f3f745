"""The base architecture a LoRA was trained for, and the text encoders it adapts, from names and shapes."""

from __future__ import annotations

import re

from .files import Header


def _in_width(header: Header, module) -> int | None:
    role = "down" if "down" in module.parts else None
    if role is None:
        return None
    shape = header.tensors[module.parts[role]].shape
    return shape[1] if len(shape) >= 2 else None


def detect_base(header: Header, modules: dict) -> str | None:
    """The base architecture a LoRA was trained for, from key names and shapes (see research/formats.md §1.6)."""
    keys = " ".join(modules)
    meta = " ".join(header.metadata.get(k, "") for k in ("modelspec.architecture", "ss_base_model_version")).lower()
    if "double_blocks" in keys or "single_transformer_blocks" in keys or "single_blocks" in keys:
        return "chroma" if "chroma" in meta else "flux"
    if "joint_blocks" in keys or ("add_q_proj" in keys and "transformer_blocks" in keys):
        return "sd3"
    if re.search(r"lora_te2_(text_model_)?encoder_layers|text_encoder_2\.|clip_g\.", keys):  # CLIP-G, not T5
        return "sdxl"
    for module in modules.values():
        if re.search(r"attn2[._](processor[._])?to_k$", module.key):
            width = _in_width(header, module)
            base = {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(width)
            if base:
                return base
    if re.search(r"input_blocks[._]7[._]1[._]transformer_blocks[._]9", keys):
        return "sdxl"
    if not any(not m.is_text_encoder for m in modules.values()):  # a text-encoder-only LoRA: CLIP width
        widths = {_in_width(header, m) for m in modules.values() if re.search(r"(q_proj|mlp_fc1|fc1)$", m.key)}
        for width, base in ((768, "sd1"), (1024, "sd2")):
            if widths == {width}:
                return base
    for token, base in _OTHER_BASES:
        if re.search(token, keys):
            return base
    for needle, base in (("stable-diffusion-v1", "sd1"), ("sd_v1", "sd1"), ("stable-diffusion-v2", "sd2"),
                         ("sd_v2", "sd2"), ("stable-diffusion-xl", "sdxl"), ("sdxl", "sdxl")):
        if needle in meta:
            return base
    return None


# Architectures the detection names by a distinctive token only (no shape rules yet).
_OTHER_BASES: tuple[tuple[str, str], ...] = (
    (r"double_layers|single_layers", "auraflow"),
    (r"(^|[._])blocks[._]\d+[._](cross_attn|self_attn)[._]", "wan"),
    (r"img_mlp|txt_mlp", "qwen-image"),
    (r"(^|[._])layers[._]\d+[._]attention[._]", "lumina2"),
)


def text_encoder_parts(header: Header, modules: dict) -> tuple[str, ...]:
    """Which text encoders a LoRA adapts: clip_l / clip_h / clip_g / t5 when shapes tell, else the file's prefix."""
    parts = set()
    for module in modules.values():
        if not module.is_text_encoder:
            continue
        if re.search(r"encoder[._]block|SelfAttention|DenseReluDense|t5", module.key):
            parts.add("t5")
            continue
        width = _in_width(header, module) if re.search(r"(q_proj|fc1)$", module.key) else None
        name = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}.get(width)
        if name is None:
            match = re.match(r"^(lora_te\d?|lora_prior_te|text_encoder(?:_\d)?|text_encoders\.\w+)", module.key)
            name = match.group(1) if match else "text_encoder"
        parts.add(name)
    return tuple(sorted(parts))


