"""How a block-weight spec reads, for the block editor: the grammar's own answer (loader.spec), never a copy.

The editor has no live model, so it reads a spec against a stand-in block map: an architecture's block
structure (`LAYOUTS`: SD1/SD2 and SDXL UNets, Flux's double and single blocks) or the blocks named in the
row's LoRA (`block_guess.guess_from_lora`, as the info panel's block energy). Both are `BlockMap`s built by
`BlockMap.from_keys`, the constructor the patching code uses on the live model, with the host's text-encoder
names (`clip_l`, `clip_g`, `t5xxl`), so ids, aliases and vector layouts are the ones a run sees. Element names
cannot be checked without the model's weights: the run checks them.

`reading()` answers what the editor shows: each slot's ratio, the grammar's canonical reading, whether
plain per-block sliders hold the whole meaning, and an error with its character position.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass

from . import block_guess, blocks, cache, info, presets, spec
from .blocks import EMB, FINAL, BlockMap

SLIDER_RANGE = (-1.0, 2.0)


@dataclass(frozen=True)
class Layout:
    label: str
    text_encoders: tuple[str, ...]
    unet_levels: int = 0
    chains: tuple[tuple[str, int], ...] = ()

    def block_map(self) -> BlockMap:
        if self.unet_levels:
            keys = block_guess.unet_skeleton(self.unet_levels)
        else:
            keys = block_guess.chain_skeleton(self.chains)
        return BlockMap.from_keys(self.label, keys, [f"{te}.x.weight" for te in self.text_encoders])


LAYOUTS = {
    "sd1": Layout("SD 1.x / 2.x UNet", ("clip_l",), unet_levels=12),
    "sdxl": Layout("SDXL UNet", ("clip_l", "clip_g"), unet_levels=9),
    "flux": Layout("Flux (double + single blocks)", ("clip_l", "t5xxl"),
                   chains=(("double_blocks", 19), ("single_blocks", 38))),
}
LORA_LAYOUT = "lora"  # the blocks the row's LoRA names
LAYOUT_OF_BASE = {"sd1": "sd1", "sd2": "sd1", "sdxl": "sdxl", "flux": "flux"}
LAYOUT_OF_FAMILY = {"sd1": "sd1", "sdxl": "sdxl"}  # a LoRA's UNet names tell its levels even without a base

# The editor's own presets, as specs the grammar reads; each is offered where its family has the blocks.
EDITOR_PRESETS = (
    ("ALL", "All blocks 1", "", None),
    ("NONE", "All blocks 0", "0", None),
    ("ALL0.5", "All blocks 0.5", "0.5", None),
    ("NOTE", "Text encoder off", "BASE=0", None),
    ("DOUBLE", "Double blocks only", "SINGLE=0", "double_single"),
    ("SINGLE", "Single blocks only", "DOUBLE=0", "double_single"),
    ("IN", "Input blocks only", "MID=0, OUT=0", "unet"),
    ("MID", "Middle block only", "IN=0, OUT=0", "unet"),
    ("OUT", "Output blocks only", "IN=0, MID=0", "unet"),
)
UNET_FAMILIES = ("sd1", "sdxl", "unet")


def lora_block_map(module_keys: Iterable[str], base: str | None) -> BlockMap:
    """The blocks a LoRA's own module names tell (chains as long as the LoRA's highest block)."""
    block_map, _ = block_guess.guess_from_lora(list(module_keys), base)
    return block_map


def lora_blocks(path: str | os.PathLike) -> tuple[str | None, BlockMap]:
    """(base model, block map from its module names) of the LoRA at `path`, as its block energy reads it."""
    def read(loaded: cache.LoadedLora):
        base = loaded.layout.base or info.base_from_metadata(loaded.header.metadata)
        return base, lora_block_map(loaded.adapters, loaded.layout.base)

    return cache.shared_cache.use(str(path), read)


@functools.lru_cache(maxsize=len(LAYOUTS))
def layout_map(key: str) -> BlockMap:
    return LAYOUTS[key].block_map()


def editor_answer(text: str, layout: str | None, lora: tuple[str | None, BlockMap] | None,
                  user_presets: dict[str, str]) -> dict:
    """Everything the block editor shows for `text`: the layout (the one asked for, else the LoRA's base
    model's or its UNet's, else the LoRA's own blocks), its slots, presets that read on it, and the spec's reading.
    `lora` is `lora_blocks()` of the row's LoRA, or None."""
    base, own = lora if lora else (None, None)
    key = layout or LAYOUT_OF_BASE.get(base or "") or (own and LAYOUT_OF_FAMILY.get(own.family))
    key = key or (LORA_LAYOUT if own else "sd1")
    block_map = own if key == LORA_LAYOUT else layout_map(key)
    layouts = [{"key": k, "label": L.label} for k, L in LAYOUTS.items()]
    if own is not None:
        layouts.append({"key": LORA_LAYOUT, "label": f"This LoRA's blocks ({blocks.compress_ids(own.blocks)})"})
    return {"layout": key, "layouts": layouts, "architecture": block_map.architecture,
            "slider_range": list(SLIDER_RANGE), **shape(block_map),
            "presets": offered_presets(block_map, user_presets), **reading(text, block_map, user_presets)}


def shape(block_map: BlockMap) -> dict:
    """How the editor lays the slots out: text encoders and the non-block groups, then the network."""
    extra = [slot for slot in (EMB, FINAL) if slot in block_map.ids]
    if block_map.family in UNET_FAMILIES:
        network = {"kind": "unet", "down": list(block_map.chains.get("input_blocks", ())),
                   "mid": list(block_map.chains.get("middle_block", ())),
                   "up": list(block_map.chains.get("output_blocks", ()))}
    else:
        network = {"kind": "chains", "chains": [[_chain_title(name), list(ids)]
                                                for name, ids in block_map.chains.items()]}
    return {"ids": list(block_map.ids), "text": list(block_map.text_encoders), "extra": extra, **network}


def _chain_title(name: str) -> str:
    return name.replace("_", " ").capitalize()


def reading(text: str, block_map: BlockMap, user_presets: dict[str, str] | None = None) -> dict:
    """What the grammar makes of `text` on `block_map`, as the editor shows it (JSON-ready)."""
    try:
        weights = spec.parse(text, block_map, presets=user_presets, check_elements=False)
    except spec.SpecError as e:
        return {"error": str(e), "position": e.position}
    ratios = {slot: weights.by_block.get(slot, weights.default) for slot in block_map.ids}
    lo, hi = SLIDER_RANGE
    not_sliders = []
    if weights.rules:
        not_sliders.append(f"{len(weights.rules)} element rule{'s' if len(weights.rules) > 1 else ''}")
    outside = [slot for slot, v in ratios.items() if not lo <= v <= hi]
    if outside:
        not_sliders.append(f"{blocks.compress_ids(outside)} outside the sliders' {lo:g}…{hi:g}")
    told = weights.summary()
    if weights.rules:
        told += "\n(element names are checked against the model's weights when the workflow runs)"
    return {"error": None, "position": None, "ratios": ratios, "default": weights.default,
            "reading": told, "rules": weights.rule_texts(), "sliders": not not_sliders,
            "not_sliders": "; ".join(not_sliders)}


def offered_presets(block_map: BlockMap, user_presets: dict[str, str]) -> list[dict]:
    """The presets the editor offers on this map: its own, A1111's that this model reads, the user's."""
    offered = []
    for name, title, text, family in EDITOR_PRESETS:
        if family == "unet" and block_map.family not in UNET_FAMILIES:
            continue
        if family and family != "unet" and block_map.family != family:
            continue
        offered.append({"name": name, "title": title, "spec": text})
    for name in presets.A1111_PRESETS:
        if name in {p["name"] for p in offered}:
            continue
        if _reads(name, block_map):  # written as the name: the grammar reads it exactly as A1111
            offered.append({"name": name, "title": f"A1111 {name}", "spec": name})
    offered = [p for p in offered if _reads(p["spec"], block_map)]
    offered += [{"name": f"user:{name}", "title": name, "spec": text, "user": True}
                for name, text in user_presets.items()]
    return offered


def _reads(text: str, block_map: BlockMap) -> bool:
    try:
        spec.parse(text, block_map, check_elements=False)
    except spec.SpecError:
        return False
    return True
