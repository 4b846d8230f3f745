"""IA³ (LyCORIS `ia3`): a learned per-channel scaling of the weight."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Adapter, bias_change, f32


@dataclass(frozen=True, eq=False, kw_only=True)
class IA3(Adapter):
    """W' = W ⊙ (1 + s·w), w per output channel, or per input channel when the file's `on_input` is 1."""

    w: torch.Tensor
    on_input: bool = False

    kind = "ia3"
    suffixes = ((".on_input", "on_input"),)
    required = (frozenset({"ia3", "on_input"}),)
    weight_dependent = True

    @classmethod
    def claim_after(cls, name: str, names) -> tuple[str, str] | None:
        """IA³ keeps its vector as `<module>.weight`, told by the `<module>.on_input` beside it."""
        if name.endswith(".weight") and name[: -len(".weight")] + ".on_input" in names:
            return name[: -len(".weight")], "ia3"
        return None

    @classmethod
    def build(cls, module, tensors, context):
        p = {role: tensors[name] for role, name in module.parts.items()}
        return cls(w=p["ia3"], on_input=bool(p["on_input"].item()), bias=bias_change(p))

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        w = f32(self.w).flatten()
        if self.on_input:
            return weight * w.reshape((1, -1) + (1,) * (weight.dim() - 2))
        return weight * w.reshape((-1,) + (1,) * (weight.dim() - 1))
