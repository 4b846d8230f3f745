"""LoKr (LyCORIS): a Kronecker product of two factors, each full or low-rank (the second also Tucker)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Adapter, Shapes, alpha_scale, bias_change, f32, f64, flat, lowrank_sq_norm, tucker_ab


@dataclass(frozen=True, eq=False, kw_only=True)
class LoKr(Adapter):
    """ΔW = scale · kron(W1, W2), each factor full or a low-rank product (W2 also with Tucker t2)."""

    w1: torch.Tensor | None = None
    w1a: torch.Tensor | None = None
    w1b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2a: torch.Tensor | None = None
    w2b: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    kind = "lokr"
    suffixes = (
        (".lokr_w1_a", "w1a"),
        (".lokr_w1_b", "w1b"),
        (".lokr_w2_a", "w2a"),
        (".lokr_w2_b", "w2b"),
        (".lokr_w1", "w1"),
        (".lokr_w2", "w2"),
        (".lokr_t2", "t2"),
    )
    required = (frozenset({"w1", "w2"}), frozenset({"w1", "w2a", "w2b"}), frozenset({"w1a", "w1b", "w2"}),
                frozenset({"w1a", "w1b", "w2a", "w2b"}))

    @classmethod
    def rank_from_shapes(cls, shapes: Shapes) -> int | None:
        role = "w1b" if "w1b" in shapes else "w2b" if "w2b" in shapes else None
        shape = shapes[role] if role else None
        return shape[0] if shape else None  # a scalar factor has no rank (its adapter is refused when built)

    @classmethod
    def build(cls, module, tensors, context):
        p = {role: tensors[name] for role, name in module.parts.items()}
        if "w1b" in p:
            scale = alpha_scale(module, tensors, p["w1b"].shape[0])
        elif "w2b" in p:
            scale = alpha_scale(module, tensors, p["w2b"].shape[0])
        else:
            scale = 1.0  # both factors full: LyCORIS forces alpha = dim
        return cls(w1=p.get("w1"), w1a=p.get("w1a"), w1b=p.get("w1b"), w2=p.get("w2"), w2a=p.get("w2a"),
                   w2b=p.get("w2b"), t2=p.get("t2"), scale=scale, bias=bias_change(p),
                   dora_scale=p.get("dora_scale"), magnitude=p.get("magnitude"))

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        w1 = f32(self.w1) if self.w1 is not None else f32(self.w1a) @ f32(self.w1b)
        if self.w2 is not None:
            w2 = f32(self.w2)
        elif self.t2 is not None:
            w2 = tucker_ab(f32(self.t2), f32(self.w2a), f32(self.w2b))
        else:
            w2b = f32(self.w2b)
            w2 = f32(self.w2a) @ flat(w2b)
            if weight.dim() > 2:  # conv: w2b is [r, d, kh, kw] (4.x) or [r, d·kh·kw] (older)
                w2 = w2.reshape(w2.shape[0], weight.shape[1] // w1.shape[1], *weight.shape[2:])
        while w1.dim() < w2.dim():
            w1 = w1.unsqueeze(-1)
        return (self.scale * torch.kron(w1.contiguous(), w2.contiguous())).reshape(weight.shape)

    def factor_norm(self) -> float:
        """‖s·(W1 ⊗ W2)‖ = |s|·‖W1‖·‖W2‖, each factor's norm by the Gram trick when low-rank."""
        def factor(full, a, b, t=None) -> float:
            if full is not None:
                return float(torch.linalg.vector_norm(f64(full)))
            if t is not None:
                return float(torch.linalg.vector_norm(torch.einsum("ijkl,jr,ip->prkl", f64(t), f64(b), f64(a))))
            return math.sqrt(lowrank_sq_norm(a, b))

        return abs(self.scale) * factor(self.w1, self.w1a, self.w1b) * factor(self.w2, self.w2a, self.w2b, self.t2)
