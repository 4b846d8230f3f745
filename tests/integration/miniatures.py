"""Miniature transformer configurations for the host's own model classes (SD1/SDXL come from hosting).

Real chains (double/single, joint, blocks, layers, refiners) and tiny widths: block maps and key maps depend
on structure, not width.
"""

from __future__ import annotations

import hosting

SD3 = {
    "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2, "input_size": None,
    "adm_in_channels": 32, "pos_embed_scaling_factor": None, "num_patches": 64, "pos_embed_max_size": 8,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 48, "out_features": 128}},
    "x_block_self_attn_layers": [],
}

FLUX = {
    "image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "vec_in_dim": 32,
    "context_in_dim": 48, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 4, "depth": 2,
    "depth_single_blocks": 3, "axes_dim": [4, 6, 6], "theta": 10000, "patch_size": 2, "qkv_bias": True,
}

WAN21 = {
    "image_model": "wan2.1", "model_type": "t2v", "dim": 32, "ffn_dim": 64, "freq_dim": 32, "text_dim": 48,
    "in_dim": 16, "out_dim": 16, "num_heads": 2, "num_layers": 3, "eps": 1e-6,
}

QWEN_IMAGE = {
    "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 3,
    "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 48,
    "axes_dims_rope": (4, 6, 6),
}

LUMINA2 = {
    "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "n_layers": 3,
    "n_refiner_layers": 2, "n_heads": 2, "n_kv_heads": 2, "multiple_of": 16, "ffn_dim_multiplier": 1.0,
    "norm_eps": 1e-5, "qk_norm": True, "cap_feat_dim": 48, "axes_dims": [8, 12, 12], "axes_lens": [1, 64, 64],
}

HUNYUAN_VIDEO = {
    "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32,
    "context_in_dim": 48, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 4, "depth": 2,
    "depth_single_blocks": 3, "axes_dim": [4, 6, 6], "theta": 256, "patch_size": [1, 2, 2],
    "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False,
    "use_cond_type_embedding": False, "vision_in_dim": None,
}

CONFIGS = {
    "SD3": SD3, "Flux": FLUX, "WAN21_T2V": WAN21, "QwenImage": QWEN_IMAGE,
    "Lumina2": LUMINA2, "HunyuanVideo": HUNYUAN_VIDEO,
}


def build(architecture: str, seed: int = 0):
    """A ModelPatcher around a host model of the supported_models class `architecture`, tiny and seeded."""
    if architecture in ("SD15", "SDXL"):
        return hosting.mini_model(architecture, seed=seed)
    return hosting.mini_model(architecture, seed=seed, unet_config=CONFIGS[architecture])
