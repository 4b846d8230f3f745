"""Small real LoRA files for the browser tests: kohya-format safetensors over the miniature SD1 UNet.

Module names and shapes are those the host's own key map gives for `hosting.mini_model("SD15")`, so the
real server patches them into the miniature model the testing pack provides. Metadata is what kohya's
sd-scripts writes (base model version, resolution, tag frequency), so the info panel has facts to show.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

# kohya module name -> (out_features, in_features) in the miniature SD1 UNet (model_channels 32, context 64)
MINI_SD1_MODULES = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (32, 32),  # IN01
    "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (64, 64),  # IN04
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k": (128, 64),  # M00
    "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": (128, 128),  # OUT03
    "lora_unet_up_blocks_2_attentions_1_transformer_blocks_0_attn2_to_k": (64, 64),  # OUT07
}

TAGS = {"1_dataset": {"loradeck_style": 40, "watercolor": 31, "soft light": 12, "1girl": 3}}


# A module of SDXL's second text encoder (OpenCLIP-G): its presence marks a LoRA as made for SDXL.
SDXL_TE2_MODULE = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (64, 64)}


# Three joint blocks of an SD3 MMDiT (kohya names): a network shape the editor builds from the LoRA itself.
SD3_MODULES = {f"lora_unet_joint_blocks_{i}_x_block_attn_qkv": (96, 32) for i in (0, 5, 11)}


def write_kohya_lora(path: str | os.PathLike, seed: int, rank: int = 4, alpha: float = 2.0,
                     tags: dict | None = None, base_version: str = "sd_v1", sdxl: bool = False,
                     modules: dict | None = None) -> Path:
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    modules = modules or {**MINI_SD1_MODULES, **(SDXL_TE2_MODULE if sdxl else {})}
    for name, (out_features, in_features) in modules.items():
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator).half() * 0.1
        tensors[f"{name}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator).half() * 0.1
        tensors[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float16)
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": base_version,
        "ss_resolution": "(512, 512)",
        "ss_output_name": Path(path).stem,
        "ss_tag_frequency": json.dumps(tags if tags is not None else TAGS),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def make_library(loras: Path, outside: Path) -> dict[str, Path]:
    """The test loras folder: a few LoRAs in folders, a non-LoRA file, a symlink the user placed, and
    files outside the folder that no request may read."""
    files = {
        "alpha_style.safetensors": write_kohya_lora(loras / "alpha_style.safetensors", seed=1),
        "styles/beta_ink.safetensors": write_kohya_lora(loras / "styles" / "beta_ink.safetensors", seed=2, rank=8,
                                                        alpha=8.0, tags={"d": {"ink": 9, "lineart": 4}}),
        "styles/deep/gamma_light.safetensors": write_kohya_lora(
            loras / "styles" / "deep" / "gamma_light.safetensors", seed=3, tags={}),
        "characters/delta_hero.safetensors": write_kohya_lora(loras / "characters" / "delta_hero.safetensors", seed=4),
        "xl/epsilon_xl.safetensors": write_kohya_lora(loras / "xl" / "epsilon_xl.safetensors", seed=6,
                                                      base_version="sdxl_base_v1-0", sdxl=True),
        "sd3/zeta_sd3.safetensors": write_kohya_lora(loras / "sd3" / "zeta_sd3.safetensors", seed=8,
                                                     base_version="sd3", modules=SD3_MODULES),
    }
    (loras / "notes.txt").write_text("not a LoRA")
    outside.mkdir(parents=True, exist_ok=True)
    write_kohya_lora(outside / "secret.safetensors", seed=99, tags={"d": {"SECRET_TAG": 1}})
    write_kohya_lora(outside / "linked_target.safetensors", seed=5)
    os.symlink(outside / "linked_target.safetensors", loras / "linked.safetensors")
    files["linked.safetensors"] = loras / "linked.safetensors"
    return files
