"""Block ids read from a LoRA's own module names, for when no model is connected (Block View, the info panel).

A stand-in model is built from the names: UNet levels as SD1/SD2 (12) or SDXL (9), transformer chains as long as
the LoRA's highest block; `blocks.BlockMap.from_keys` then numbers it as it numbers a live model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .blocks import DIFFUSION_PREFIX, BlockMap

_TE = re.compile(r"^(?:lora_te(\d?)|text_encoder(?:_(\d))?|lora_prior_te|text_encoders_(\w+?))_")
_GUESS = (
    (re.compile(r"input_blocks_(\d+)_(.*)"), lambda m: ("input_blocks", int(m[1]), m[2])),
    (re.compile(r"middle_block_(.*)"), lambda m: ("middle_block", 1, m[1])),
    (re.compile(r"output_blocks_(\d+)_(.*)"), lambda m: ("output_blocks", int(m[1]), m[2])),
    (re.compile(r"down_blocks_(\d+)_(?:attentions|resnets)_(\d+)_(.*)"),
     lambda m: ("input_blocks", 1 + 3 * int(m[1]) + int(m[2]), m[3])),
    (re.compile(r"down_blocks_(\d+)_downsamplers_(.*)"), lambda m: ("input_blocks", 3 + 3 * int(m[1]), m[2])),
    (re.compile(r"mid_block_(.*)"), lambda m: ("middle_block", 1, m[1])),
    (re.compile(r"up_blocks_(\d+)_(?:attentions|resnets)_(\d+)_(.*)"),
     lambda m: ("output_blocks", 3 * int(m[1]) + int(m[2]), m[3])),
    (re.compile(r"up_blocks_(\d+)_upsamplers_(.*)"), lambda m: ("output_blocks", 3 * int(m[1]) + 2, m[2])),
    (re.compile(r"(?:^|_)conv_in(.*)"), lambda m: ("input_blocks", 0, "conv_in")),
    (re.compile(r"single_transformer_blocks_(\d+)_(.*)"), lambda m: ("single_blocks", int(m[1]), m[2])),
    (re.compile(r"single_blocks_(\d+)_(.*)"), lambda m: ("single_blocks", int(m[1]), m[2])),
    (re.compile(r"double_blocks_(\d+)_(.*)"), lambda m: ("double_blocks", int(m[1]), m[2])),
    (re.compile(r"joint_blocks_(\d+)_(.*)"), lambda m: ("joint_blocks", int(m[1]), m[2])),
    (re.compile(r"transformer_blocks_(\d+)_(.*)"), lambda m: ("transformer_blocks", int(m[1]), m[2])),
    (re.compile(r"(?:^|_)blocks_(\d+)_(.*)"), lambda m: ("blocks", int(m[1]), m[2])),
    (re.compile(r"(noise_refiner|context_refiner|layers)_(\d+)_(.*)"), lambda m: (m[1], int(m[2]), m[3])),
)


def unet_skeleton(levels: int) -> list[str]:
    """Stand-in model keys of a UNet with `levels` input and output blocks (12 for SD1/SD2, 9 for SDXL)."""
    keys = [f"{DIFFUSION_PREFIX}time_embed.0.weight"]
    keys += [f"{DIFFUSION_PREFIX}input_blocks.{i}.0.x.weight" for i in range(levels)]
    keys += [f"{DIFFUSION_PREFIX}middle_block.1.x.weight"]
    keys += [f"{DIFFUSION_PREFIX}output_blocks.{i}.0.x.weight" for i in range(levels)]
    return [*keys, f"{DIFFUSION_PREFIX}out.2.weight"]


def chain_skeleton(lengths: Iterable[tuple[str, int]]) -> list[str]:
    """Stand-in model keys of a transformer: embedders, each (chain name, length) in order, a final layer."""
    keys = [f"{DIFFUSION_PREFIX}embedders.weight"]
    for chain, length in lengths:
        keys += [f"{DIFFUSION_PREFIX}{chain}.{i}.x.weight" for i in range(length)]
    return [*keys, f"{DIFFUSION_PREFIX}final_layer.weight"]


def guess_from_lora(module_keys: Iterable[str], base: str | None = None) -> tuple[BlockMap, dict[str, str]]:
    """A block map read from a LoRA's module names alone, and the stand-in model key of each module.

    Without the model, chain lengths are the LoRA's own (up to its highest block) and UNet levels follow
    `base` ("sd1", "sdxl"; guessed from the names when None). Prefer `BlockMap.from_keys` on a live model.
    """
    flat = {key: re.sub(r"[.]", "_", key) for key in module_keys}
    text_encoders, placed, other = _read_names(flat)
    chains = {chain for chain, _, _ in placed.values()}
    if "single_blocks" in chains and "transformer_blocks" in chains:  # diffusers Flux: double = transformer
        placed = {k: ("double_blocks" if c == "transformer_blocks" else c, i, r) for k, (c, i, r) in placed.items()}
    elif base == "sd3":
        placed = {k: ("joint_blocks" if c == "transformer_blocks" else c, i, r) for k, (c, i, r) in placed.items()}
    unet = any(c in ("input_blocks", "middle_block", "output_blocks") for c, _, _ in placed.values())
    sdxl = unet and _is_sdxl(placed, text_encoders, base)
    skeleton = unet_skeleton(9 if sdxl else 12) if unet else chain_skeleton(_chain_lengths(placed))
    stand_in = _stand_ins(placed, other, flat, unet)
    te_keys = {key: f"{name}.{flat[key]}.weight" for key, name in sorted(text_encoders.items(), key=lambda kv: kv[1])}
    stand_in.update(te_keys)
    unet_keys = [k for k in skeleton if k not in stand_in.values()] + [v for k, v in stand_in.items()
                                                                        if k not in te_keys]
    unet_keys.sort(key=lambda k: (_skeleton_rank(k, skeleton)))
    family_name = ("SDXL" if sdxl else "SD1") if unet else "LoRA"
    block_map = BlockMap.from_keys(f"{family_name} (read from the LoRA's names)", unet_keys,
                                   sorted(te_keys.values()))
    return block_map, stand_in


def _read_names(flat: dict[str, str]):
    """Each module as a text encoder's (key → te name), a block's (key → (chain, index, rest)), or other."""
    text_encoders: dict[str, str] = {}
    placed: dict[str, tuple[str, int, str]] = {}
    other: list[str] = []
    for key, name in flat.items():
        te = _TE.match(name)
        if te:
            text_encoders[key] = f"te{te[1] or te[2] or (te[3] or '1')}"
            continue
        body = re.sub(r"^(lora_unet_|lora_transformer_|lycoris_|transformer_|unet_|diffusion_model_|"
                      r"base_model_model_|lora_prior_unet_)", "", name)
        for pattern, place in _GUESS:
            match = pattern.search(body)
            if match:
                placed[key] = place(match)
                break
        else:
            other.append(key)
    return text_encoders, placed, other


def _is_sdxl(placed, text_encoders: dict[str, str], base: str | None) -> bool:
    highest = max((i for c, i, _ in placed.values() if c != "middle_block"), default=0)
    return base == "sdxl" or (base is None and highest <= 8 and "te2" in set(text_encoders.values()))


def _chain_lengths(placed) -> list[tuple[str, int]]:
    order = ["double_blocks", "single_blocks", "joint_blocks", "transformer_blocks", "blocks",
             "noise_refiner", "context_refiner", "layers"]
    return [(chain, max(i for c, i, _ in placed.values() if c == chain) + 1)
            for chain in order if any(c == chain for c, _, _ in placed.values())]


def _stand_ins(placed, other: list[str], flat: dict[str, str], unet: bool) -> dict[str, str]:
    stand_in: dict[str, str] = {}
    for key, (chain, index, rest) in placed.items():
        rest = rest.replace("_", ".") or "x"
        stand_in[key] = f"{DIFFUSION_PREFIX}{chain}.{index}.{rest}.weight"
    for key in other:
        stand_in[key] = f"{DIFFUSION_PREFIX}{'out.2' if unet and 'conv_out' in flat[key] else 'embedders'}.weight"
        if not unet and re.search(r"final|proj_out|norm_out|head", flat[key]):
            stand_in[key] = f"{DIFFUSION_PREFIX}final_layer.weight"
    return stand_in


def _skeleton_rank(key: str, skeleton: list[str]) -> tuple[int, str]:
    parts = key.split(".")
    for position, s in enumerate(skeleton):
        sp = s.split(".")
        if sp[:3] == parts[:3] or (len(sp) == 3 and sp[:2] == parts[:2]):
            return position, key
    return len(skeleton), key
