"""Full / diff weights (LyCORIS `full`, ComfyUI `diff`) and norm-layer diffs (LyCORIS `w_norm`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Adapter, bias_change, f32, fro


@dataclass(frozen=True, eq=False, kw_only=True)
class Full(Adapter):
    """ΔW = diff, Δbias = diff_b."""

    diff: torch.Tensor

    kind = "full"
    suffixes = ((".diff", "diff"),)
    required = (frozenset({"diff"}),)
    aliases = ("diff",)

    @classmethod
    def build(cls, module, tensors, context):
        p = {role: tensors[name] for role, name in module.parts.items()}
        return Full(diff=p["diff"], bias=bias_change(p))

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        return f32(self.diff).reshape(weight.shape)

    def factor_norm(self) -> float:
        return fro(self.diff)


class Norm(Full):
    """A norm layer's weight diff (`w_norm`, with `b_norm` for its bias): applied as a full diff."""

    kind = "norm"
    suffixes = ((".w_norm", "w_norm"),)
    required = (frozenset({"w_norm"}),)
    aliases = ()

    @classmethod
    def build(cls, module, tensors, context):
        p = {role: tensors[name] for role, name in module.parts.items()}
        return Full(diff=p["w_norm"], bias=bias_change(p))
