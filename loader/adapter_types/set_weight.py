"""A weight replaced outright (the host's `set` patch): BFL control LoRAs' RMSNorm scales.

Only control LoRAs (loader/control_lora.py) name such modules: a `.set_weight` tensor elsewhere stays a tensor
in no known layout (nothing but the host's own conversion writes it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import control_lora
from .base import Adapter, f32, fro


@dataclass(frozen=True, eq=False, kw_only=True)
class SetWeight(Adapter):
    """W' = value at any strength other than 0, as the host's `set` patch (its strength is not applied)."""

    value: torch.Tensor

    kind = "set"
    suffixes = ()  # told by name and file only (claim_after)
    required = (frozenset({"set"}),)
    weight_dependent = True

    @classmethod
    def claim_after(cls, name: str, names) -> tuple[str, str] | None:
        """A control LoRA stores the new scale under the parameter's own name (`…key_norm.scale`)."""
        if control_lora.is_set_scale(name) and control_lora.is_bfl_control(names):
            return name, "set"
        return None

    @classmethod
    def build(cls, module, tensors, context):
        return cls(value=tensors[module.parts["set"]])

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        return f32(self.value).reshape(weight.shape) - weight

    def apply_(self, weight: torch.Tensor, strength: float) -> None:
        weight.copy_(self.value.to(weight.device, weight.dtype).reshape(weight.shape))

    def norm(self, weight: torch.Tensor | None = None) -> float | None:
        return None if weight is None else fro(self.delta(weight))
