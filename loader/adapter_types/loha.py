"""LoHa (LyCORIS): a Hadamard product of two low-rank products, optionally each through a Tucker core."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Adapter, Shapes, alpha_scale, bias_change, f32, f64, flat, tucker_ab


@dataclass(frozen=True, eq=False, kw_only=True)
class LoHa(Adapter):
    """ΔW = scale · (w1a @ w1b) ⊙ (w2a @ w2b); with Tucker t1/t2 each factor is rebuilt through its core."""

    w1a: torch.Tensor
    w1b: torch.Tensor
    w2a: torch.Tensor
    w2b: torch.Tensor
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    kind = "loha"
    suffixes = (
        (".hada_w1_a", "w1a"),
        (".hada_w1_b", "w1b"),
        (".hada_w2_a", "w2a"),
        (".hada_w2_b", "w2b"),
        (".hada_t1", "t1"),
        (".hada_t2", "t2"),
    )
    required = (frozenset({"w1a", "w1b", "w2a", "w2b"}),)

    @classmethod
    def rank_from_shapes(cls, shapes: Shapes) -> int | None:
        shape = shapes.get("w1b")
        return shape[0] if shape else None

    @classmethod
    def build(cls, module, tensors, context):
        p = {role: tensors[name] for role, name in module.parts.items()}
        return cls(w1a=p["w1a"], w1b=p["w1b"], w2a=p["w2a"], w2b=p["w2b"], t1=p.get("t1"), t2=p.get("t2"),
                   scale=alpha_scale(module, tensors, p["w1b"].shape[0]), bias=bias_change(p),
                   dora_scale=p.get("dora_scale"), magnitude=p.get("magnitude"))

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        w1a, w1b, w2a, w2b = map(f32, (self.w1a, self.w1b, self.w2a, self.w2b))
        if self.t1 is not None and self.t2 is not None:
            product = tucker_ab(f32(self.t1), w1a, w1b) * tucker_ab(f32(self.t2), w2a, w2b)
        else:
            product = (flat(w1a) @ flat(w1b)) * (flat(w2a) @ flat(w2b))
        return (self.scale * product).reshape(weight.shape)

    def factor_norm(self) -> float:
        """No shortcut for a Hadamard product of low-rank products: materialised in fp64."""
        def product(a, b, t):
            if t is not None:
                return torch.einsum("ijkl,jr,ip->prkl", f64(t), f64(b), f64(a))
            return f64(a) @ f64(b).flatten(start_dim=1)

        w = product(self.w1a, self.w1b, self.t1) * product(self.w2a, self.w2b, self.t2)
        return abs(self.scale) * float(torch.linalg.vector_norm(w))
