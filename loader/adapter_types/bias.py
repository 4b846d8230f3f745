"""A bias change on its own (`diff_b`, `b_norm`, PEFT's `lora_B.bias`), registered on the layer's bias."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import AdapterType, bias_change, fro


@dataclass(frozen=True, eq=False)
class BiasChange(AdapterType):
    """Δbias at strength 1; a module of this type holds a bias diff and names no other type."""

    bias_delta: torch.Tensor

    linear = True
    needs_weight = False
    is_dora = False
    kind = "bias"
    label = "bias"
    shared_suffixes = ((".diff_b", "diff_b"), (".b_norm", "b_norm"))
    required = (frozenset({"diff_b"}),)

    @classmethod
    def accepts(cls, named: set[str], parts: dict[str, str], shapes) -> bool:
        return not named and "diff_b" in parts

    @classmethod
    def build(cls, module, tensors, context):
        return cls(bias_change({role: tensors[name] for role, name in module.parts.items()}))

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        return self.bias_delta.to(weight.device, torch.float32).reshape(weight.shape)

    def apply_(self, weight: torch.Tensor, strength: float) -> None:
        weight += (strength * self.delta(weight)).to(weight.dtype)

    def norm(self, weight: torch.Tensor | None = None) -> float:
        """‖Δb‖: the bias change is the whole change of such a module."""
        return fro(self.bias_delta)
