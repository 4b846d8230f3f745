"""GLoRA (LyCORIS), in its current and its old factor order (the host's `old_glora`, A1111's network_glora)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Adapter, Shapes, bias_change, f32, flat, scalar, tucker


def old_layout(a1: tuple, a2: tuple, b1: tuple, b2: tuple, weight: tuple | None = None) -> bool:
    """True for GLoRA factors in LyCORIS' old order (a1 [r, in], a2 [in, r], b1 [r, in], b2 [out, r]), told from
    shapes as the host's `old_glora` does; when both orders fit (square factors), the weight's shape decides
    and the old order wins when the weight is square with a2's first size (without a weight: the old order)."""
    old = b2[1] == b1[0] == a1[0] == a2[1]
    new = b2[0] == b1[1] == a1[1] == a2[0]
    if not (old and new):
        return old
    return weight is None or (len(weight) >= 2 and weight[0] == weight[1] == a2[0])


@dataclass(frozen=True, eq=False, kw_only=True)
class GLoRA(Adapter):
    """ΔW = alpha/r · (b1 @ b2 + W @ a1 @ a2); b2 carries a conv kernel, or Tucker through bm.

    LyCORIS before its 2024 rewrite stored the factors the other way round (a1 [r, in], a2 [in, r], b1 [r, in],
    b2 [out, r]): ΔW = alpha/r · (b2 @ b1 + W @ a2 @ a1), what the host calls `old_glora` and A1111 reads. The
    layout is told from shapes as the host tells it (`old_layout`), with the weight's own shape deciding when
    all four factors are square.
    """

    a1: torch.Tensor
    a2: torch.Tensor
    b1: torch.Tensor
    b2: torch.Tensor
    bm: torch.Tensor | None = None
    alpha: float = 0.0  # the file's alpha; 0: scale 1

    kind = "glora"
    suffixes = (
        (".a1.weight", "a1"),
        (".a2.weight", "a2"),
        (".b1.weight", "b1"),
        (".b2.weight", "b2"),
        (".bm.weight", "bm"),
    )
    required = (frozenset({"a1", "a2", "b1", "b2"}),)
    weight_dependent = True

    @classmethod
    def rank_from_shapes(cls, shapes: Shapes) -> int | None:
        if "bm" not in shapes:
            factors = [shapes.get(r, ()) for r in ("a1", "a2", "b1", "b2")]
            if all(len(s) >= 2 for s in factors):
                return factors[0][0] if old_layout(*factors) else factors[1][0]
        shape = shapes.get("a2")
        return shape[0] if shape else None

    @classmethod
    def build(cls, module, tensors, context):
        p = {role: tensors[name] for role, name in module.parts.items()}
        return cls(a1=p["a1"], a2=p["a2"], b1=p["b1"], b2=p["b2"], bm=p.get("bm"),
                   alpha=scalar(tensors, module, "alpha"), bias=bias_change(p),
                   dora_scale=p.get("dora_scale"), magnitude=p.get("magnitude"))

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        shapes = [tuple(t.shape) for t in (self.a1, self.a2, self.b1, self.b2)]
        old = self.bm is None and old_layout(*shapes, tuple(weight.shape))
        a1, a2, b1, b2 = (flat(f32(t)) for t in (self.a1, self.a2, self.b1, self.b2))
        rank = a1.shape[0] if old else a2.shape[0]
        scale = self.alpha / rank if self.alpha else 1.0
        if old:
            return scale * (b2 @ b1 + flat(weight) @ a2 @ a1).reshape(weight.shape)
        wb = tucker(b1, f32(self.bm), b2) if self.bm is not None else b1 @ b2
        wa = torch.einsum("oi...,ij->oj...", weight, a1)
        wa = torch.einsum("oj...,ji->oi...", wa, a2)
        return scale * (wb.reshape(weight.shape) + wa)
