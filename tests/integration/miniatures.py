"""Miniature host models: the host's own classes with the real block structure and tiny widths.

Key maps and block tables depend on structure, not width, so these exercise the same code paths as the
full models. The host's ops leave weights uninitialised, so every parameter is filled from a seeded
generator.
"""

from __future__ import annotations

import torch

SD15 = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
    "context_dim": 64, "num_heads": 8, "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}

SDXL = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "num_classes": "sequential", "adm_in_channels": 64, "in_channels": 4,
    "model_channels": 32, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 3, 3],
    "channel_mult": [1, 2, 4], "transformer_depth_middle": 3, "use_linear_in_transformer": True,
    "context_dim": 64, "num_head_channels": 16, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 3, 3, 3],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}

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
    "SD15": SD15, "SDXL": SDXL, "SD3": SD3, "Flux": FLUX, "WAN21_T2V": WAN21, "QwenImage": QWEN_IMAGE,
    "Lumina2": LUMINA2, "HunyuanVideo": HUNYUAN_VIDEO,
}


def build(architecture: str, seed: int = 0):
    """A host BaseModel of the given supported_models class with tiny widths and seeded weights."""
    import comfy.supported_models

    config_class = getattr(comfy.supported_models, architecture)
    model = config_class(dict(CONFIGS[architecture])).get_model({})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model
