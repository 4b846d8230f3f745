"""The weight change each adapter type makes, computed in fp32 from the file's own tensors.

Every adapter answers two questions: `delta(weight)`, the change at strength 1, and `apply_(weight, s)`,
which changes a weight in place at strength s. For additive (linear) adapters apply_ is weight += s·delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .formats import Module


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32)


@dataclass(frozen=True)
class LoRA:
    """LoRA / LoCon (with Tucker `mid`), optionally DoRA: ΔW = scale · up @ down."""

    up: torch.Tensor
    down: torch.Tensor
    mid: torch.Tensor | None = None
    scale: float = 1.0
    dora_scale: torch.Tensor | None = None  # LyCORIS convention, output or input axis
    magnitude: torch.Tensor | None = None  # PEFT convention, output axis

    @property
    def linear(self) -> bool:
        return self.dora_scale is None and self.magnitude is None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        up = _f32(self.up).flatten(start_dim=1)
        down = _f32(self.down)
        if self.mid is not None:
            # Tucker: ΔW[o,i,h,w] = Σ up[o,m] mid[m,n,h,w] down[n,i]
            mid = _f32(self.mid)
            core = torch.einsum("mnhw,ni->mihw", mid, down.flatten(start_dim=1))
            return (self.scale * torch.einsum("om,mihw->oihw", up, core)).reshape(weight.shape)
        return (self.scale * (up @ down.flatten(start_dim=1))).reshape(weight.shape)

    def apply_(self, weight: torch.Tensor, strength: float) -> None:
        if self.linear:
            weight += strength * self.delta(weight)
            return
        merged = weight + self.delta(weight)
        if self.magnitude is not None:  # PEFT: always per output channel, [out] or conv [1, out, 1, 1]
            target = _rescale_rows(merged, self.magnitude)
        elif self.dora_scale.shape[0] == weight.shape[0]:  # LyCORIS wd_on_output: [out, 1(, 1, 1)]
            target = _rescale_rows(merged, self.dora_scale)
        else:  # LyCORIS ≤ 2.x: per input channel, [1, in(, 1, 1)]
            target = _rescale_columns(merged, self.dora_scale)
        # Strength interpolates the whole DoRA result (LyCORIS and the host do the same).
        weight += strength * (target - weight)


def _rescale_rows(merged: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    shape = (merged.shape[0],) + (1,) * (merged.dim() - 1)
    norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(shape)
    return _f32(magnitude).reshape(shape) * merged / norm


def _rescale_columns(merged: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    shape = (1, merged.shape[1]) + (1,) * (merged.dim() - 2)
    norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1).reshape(shape)
    return _f32(magnitude).reshape(shape) * merged / norm


def lora_scale(module: Module, tensors: dict[str, torch.Tensor], peft_config: dict | None) -> float:
    """alpha / rank as the producer meant it (kohya: the alpha tensor; PEFT: its saved LoraConfig)."""
    rank = tensors[module.parts["down"]].shape[0]
    if "alpha" in module.parts:
        alpha = float(tensors[module.parts["alpha"]].item())
        return alpha / rank if alpha else 1.0
    if not peft_config:
        return 1.0
    target = module.key.split(".", 1)[-1]
    rank = int(_pattern_value(peft_config.get("rank_pattern"), target, rank))
    alpha = float(_pattern_value(peft_config.get("alpha_pattern"), target, peft_config.get("lora_alpha", rank)))
    if peft_config.get("use_rslora"):
        return alpha / math.sqrt(rank)
    return alpha / rank


def _pattern_value(patterns: dict | None, target: str, default):
    for pattern, value in (patterns or {}).items():
        if target == pattern or target.endswith("." + pattern):
            return value
    return default


def build(module: Module, tensors: dict[str, torch.Tensor], peft_config: dict | None = None) -> LoRA:
    parts = {role: tensors[name] for role, name in module.parts.items()}
    return LoRA(
        up=parts["up"],
        down=parts["down"],
        mid=parts.get("mid"),
        scale=lora_scale(module, tensors, peft_config),
        dora_scale=parts.get("dora_scale"),
        magnitude=parts.get("magnitude"),
    )
