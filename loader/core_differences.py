"""Where LoRA Deck deliberately applies a LoRA otherwise than ComfyUI core does, said in the LoRA's report.

Each note says what was applied and what core (0.3.75 and 0.8.0 alike, read in comfy/weight_adapter/ and
comfy/lora.py) does instead; docs/formats.md ("Where the host differs") gives the reasons. A note appears
only when the difference applies to what this LoRA changes at this strength.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import adapter_types as types
from .formats import Module


@dataclass(frozen=True)
class Applied:
    """One module's change as applied: its file module, adapter, coefficient and the weight's shape."""

    module: Module
    adapter: object
    coefficient: float
    shape: tuple[int, ...] | None
    fused: bool = False  # a fused q/k/v module (to_qkv) placed where the host puts its parts (fused_targets)


def notes(applied: list[Applied]) -> list[str]:
    """One sentence per kind of difference, with how many modules it concerns."""
    modules: dict[str, set[str]] = {}
    for item in applied:
        for key in _differences(item):
            modules.setdefault(key, set()).add(item.module.key)
    return [f"{len(modules[key])} {_TEXT[key]}" for key in _TEXT if key in modules]


_TEXT = {
    "fused_qkv": "fused q/k/v modules (to_qkv, to_added_qkv) applied where the model keeps their q, k and v; "
                 "ComfyUI core does not load them (lora key not loaded)",
    "split_qkv": "fused q/k/v modules (kohya split_qkv) applied at the scale they were trained at, alpha/r per part; "
                 "ComfyUI core applies 1/3 of it (1/4 for linear1)",
    "peft_alpha": "modules applied with the lora_alpha from the file's PEFT metadata; ComfyUI core ignores it "
                  "(scale 1)",
    "peft_magnitude": "PEFT DoRA magnitudes applied; ComfyUI core drops them and applies the plain LoRA",
    "dora_norm": "DoRA modules normalised by ‖W + ΔW‖ as they were trained; ComfyUI core divides by ‖W‖",
    "lokr_tucker_conv": "LoKr Tucker convolutions applied; ComfyUI core fails on them and leaves those weights "
                        "unchanged",
    "ia3_applied": "IA³ modules applied; ComfyUI core has no IA³ and leaves those weights unchanged",
    "oft_strength": "OFT modules at a strength other than 1 rotate by s·R + (1 − s)·I as LyCORIS does; ComfyUI "
                    "core applies the change twice scaled (s²)",
    "oft_rescale": "OFT modules with rescale applied; ComfyUI core ignores their rescale",
    "boft_strength": "BOFT modules at a strength other than 1 with the rotation interpolated once; ComfyUI core "
                     "scales the interpolated change by the strength again (and rescale in full)",
    "oft_constraint": "OFT/BOFT modules clamped to alpha · out_features as LyCORIS does; ComfyUI core clamps to "
                      "alpha",
}


def _differences(item: Applied) -> list[str]:
    adapter, module = item.adapter, item.module
    found = ["fused_qkv"] if item.fused else []
    if isinstance(adapter, types.LoRA):
        if adapter.split_parts > 1 and adapter.trained_scale:
            found.append("split_qkv")
        if "alpha" not in module.parts and adapter.scale != 1.0:
            found.append("peft_alpha")
    if getattr(adapter, "magnitude", None) is not None:
        found.append("peft_magnitude")
    dora_scale = getattr(adapter, "dora_scale", None)
    if dora_scale is not None and item.shape and dora_scale.shape[0] == item.shape[0]:
        found.append("dora_norm")
    if isinstance(adapter, types.LoKr) and adapter.t2 is not None and item.shape and len(item.shape) > 2:
        found.append("lokr_tucker_conv")
    if isinstance(adapter, types.IA3):
        found.append("ia3_applied")
    if isinstance(adapter, types.OFT):
        found += _oft_differences(adapter, item.coefficient)
    return found


def _oft_differences(adapter: types.OFT, coefficient: float) -> list[str]:
    found = []
    boft = isinstance(adapter, types.BOFT)
    if coefficient != 1.0:
        found.append("boft_strength" if boft else "oft_strength")
    if adapter.rescale is not None and not boft:
        found.append("oft_rescale")
    if adapter.constraint > 0:
        blocks = adapter.blocks.to(torch.float32)
        q_norm = float(torch.norm(blocks - blocks.transpose(-1, -2))) + 1e-8
        if q_norm > adapter.constraint:  # core clamps here; LyCORIS (and we) only beyond alpha · out_features
            found.append("oft_constraint")
    return found
