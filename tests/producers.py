"""Real LoRA files, made at test time by the producer libraries on models shaped like the host's miniatures.

The diffusers UNet and transformers CLIP text model below have exactly the shapes of `hosting.SD15_UNET`
and `hosting.TINY_CLIP_TEXT`, so a LoRA trained (here: randomised) on them loads onto the host's
miniature SD1 model. `peft_*` writes diffusers/PEFT files through diffusers' own `save_lora_weights`;
`kohya_*` converts them with diffusers' own `convert_state_dict_to_kohya`. The producer's own weight change
(`reference_deltas`) is read from PEFT's merge: merged weight minus base weight, per diffusers module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "time_emb_proj"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def diffusers_sd15_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
    ).eval()


def transformers_clip_text(seed: int = 1):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=12,
                            max_position_embeddings=77, vocab_size=49408, projection_dim=64, hidden_act="quick_gelu")
    return CLIPTextModel(config).eval()


@dataclass
class Trained:
    """A model with a randomised ("trained") PEFT LoRA attached."""

    model: torch.nn.Module
    rank: int
    alpha: float
    use_dora: bool


def attach_lora(model, targets, rank=4, alpha=8.0, seed=0, use_dora=False, init_scale=0.1) -> Trained:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, use_dora=use_dora, init_lora_weights=True)
    model = inject_adapter_in_model(config, model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * init_scale)
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.2 * torch.rand(param.shape, generator=generator))
    return Trained(model, rank, alpha, use_dora)


def peft_state_dict(trained: Trained) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(trained.model).items()}


def adapter_metadata(trained: Trained) -> dict:
    return {"r": trained.rank, "lora_alpha": trained.alpha, "use_dora": trained.use_dora}


def save_peft_sd15(path: str, unet: Trained | None, text: Trained | None) -> str:
    """A diffusers/PEFT SD1 LoRA file (unet. / text_encoder. keys, alpha in lora_adapter_metadata)."""
    from diffusers import StableDiffusionPipeline

    folder, name = os.path.split(path)
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=peft_state_dict(unet) if unet else None,
        text_encoder_lora_layers=peft_state_dict(text) if text else None,
        weight_name=name,
        unet_lora_adapter_metadata=adapter_metadata(unet) if unet else None,
        text_encoder_lora_adapter_metadata=adapter_metadata(text) if text else None,
    )
    return path


def save_kohya_sd15(path: str, unet: Trained | None, text: Trained | None) -> str:
    """A kohya SD1 LoRA file (lora_unet_ / lora_te_ keys with .alpha), via diffusers' own converter."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    state = {}
    if unet:
        state.update({f"unet.{k}": v for k, v in peft_state_dict(unet).items()})
    if text:
        state.update({f"text_encoder.{k}": v for k, v in peft_state_dict(text).items()})
    kohya = convert_state_dict_to_kohya(state)
    # The converter writes alpha = rank (scale 1); a kohya file keeps the trained alpha, as sd-scripts does.
    alpha = (unet or text).alpha
    kohya = {k: (torch.tensor(alpha, dtype=torch.float32) if k.endswith(".alpha") else v.contiguous())
             for k, v in kohya.items()}
    save_file(kohya, path)
    return path


def reference_deltas(trained: Trained, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """The producer's own weight change per module weight: PEFT's merged weight minus the base weight."""
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, module in trained.model.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer().weight.detach().clone()
            module.scale_layer(scale) if scale != 1.0 else None
            module.merge(adapter_names=["default"])
            merged = module.get_base_layer().weight.detach().clone()
            module.unmerge()
            if scale != 1.0:
                module.unscale_layer(scale)
            deltas[name + ".weight"] = (merged - base).to(torch.float32)
    return deltas
