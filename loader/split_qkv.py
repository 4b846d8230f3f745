"""kohya Flux `split_qkv` files: one fused q/k/v (or linear1) module that holds separately trained LoRAs.

sd-scripts' `networks.lora_flux` with `split_qkv=True` trains q, k and v (and, in single blocks, the mlp
rows of linear1) as separate rank-r LoRAs, each at alpha / r, and saves them fused: the downs stacked to
3r (4r) rows, the up block-diagonal, alpha unchanged. Every reader of such a file — sd-scripts' own
`create_network_from_weights` and `flux_merge_lora.py`, ComfyUI core, Forge, diffusers — takes the fused
module for one LoRA of rank 3r and applies alpha / 3r (alpha / 4r): a third (a quarter) of the trained
strength (sd-scripts #2204). sd-scripts' ai-toolkit converter (`convert_flux_lora.py`) writes the same
layout with alpha = 3r (4r) precisely so that alpha / 3r is right for it.

So the layout alone cannot tell the trained scale; the file's metadata can. Conventions (the user's switch):
- "auto": the trained scale when the file's own metadata shows sd-scripts split_qkv training
  (`ss_network_args` with split_qkv "True", what sd-scripts writes and reads), else ComfyUI core's;
- "trained": the trained scale for every such module (files whose metadata was stripped);
- "core": as ComfyUI core and every other reader do.
"""

from __future__ import annotations

import dataclasses
import json
import re

import torch

CONVENTIONS = ("auto", "trained", "core")

_FUSED = re.compile(r"^lora_unet_(?:double_blocks_\d+_(?:img|txt)_attn_qkv|single_blocks_\d+_linear1)$")


def parts(module_key: str, up: torch.Tensor) -> int:
    """How many separately trained LoRAs a kohya Flux fused module holds: 3 (q/k/v) or 4 (q/k/v/mlp) when its
    up is block-diagonal over those rows, else 1."""
    if not _FUSED.match(module_key) or up.dim() != 2:
        return 1
    out, rank = up.shape
    count = 3 if module_key.endswith("qkv") else 4
    if rank % count or (count == 3 and out % 3) or (count == 4 and out % 7):
        return 1
    rows = [out // 3] * 3 if count == 3 else [out // 7] * 3 + [4 * out // 7]  # linear1: q, k, v, mlp (4 × hidden)
    starts = [sum(rows[:i]) for i in range(count)]
    width = rank // count
    for i in range(count):
        for j in range(count):
            block = up[starts[i]:starts[i] + rows[i], j * width:(j + 1) * width]
            if i != j and bool(block.any()):
                return 1
    return count


def trained_by_sd_scripts(metadata: dict[str, str]) -> bool:
    """True when the file says it was trained by sd-scripts with split_qkv (its `ss_network_args` JSON).

    sd-scripts stores network_args as strings and turns split_qkv on only for the exact string "True".
    """
    try:
        args = json.loads(metadata.get("ss_network_args") or "{}")
    except (json.JSONDecodeError, TypeError):
        return False
    return isinstance(args, dict) and str(args.get("split_qkv")) == "True"


def at_convention(adapter, convention: str):
    """The adapter at the scale `convention` asks for ("auto": as built, which read the file's metadata)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"split_qkv scale must be one of {', '.join(CONVENTIONS)}, not {convention!r}")
    count = getattr(adapter, "split_parts", 1)
    if count == 1 or convention == "auto" or (convention == "trained") == adapter.trained_scale:
        return adapter
    factor = count if convention == "trained" else 1 / count
    bias = None if adapter.bias is None else adapter.bias * factor
    return dataclasses.replace(adapter, scale=adapter.scale * factor, trained_scale=convention == "trained",
                               bias=bias)
