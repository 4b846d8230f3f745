"""A whole stack as one LoRA: each weight's total change, factored to a rank budget.

When every term of a weight is low-rank (LoRA, LoCon, Tucker) and their ranks sum to no more than the
budget, the factors are concatenated with each term's coefficient (strength × block ratio × alpha/rank)
folded in: the baked weight is exact. Otherwise (above the budget, or LoHa, LoKr, DoRA, full, OFT, …) the
weight's total change is factored by SVD and truncated to the budget; the relative Frobenius error of
that truncation is returned with it. Low-rank changes above the budget are truncated through their
factors (QR, then the SVD of a K×K core), never at full size; the others need one full-size change of
one weight at a time. A 1-D weight (a norm, a bias) is kept whole as a `diff`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import fuse


@dataclass(frozen=True)
class WeightPatch:
    """One host patch on a weight: packed stack terms (fuse.pack), the host's strength, the row slice
    (`offset` = (dim, start, length)) and per-key transform it applies to."""

    packed: Sequence
    strength: float = 1.0
    offset: tuple[int, int, int] | None = None
    function: object = None


@dataclass
class BakedWeight:
    """The factors (up [out, k(, 1, 1)], down [k, in(, kh, kw)]) or the whole change (`diff`) of one weight."""

    up: torch.Tensor | None
    down: torch.Tensor | None
    diff: torch.Tensor | None
    exact: bool
    change_norm: float  # ‖ΔW‖_F of the stack's exact change
    error_norm: float  # ‖ΔW − baked‖_F

    @property
    def rank(self) -> int:
        return 0 if self.up is None else self.up.shape[1]

    @property
    def relative_error(self) -> float:
        return self.error_norm / self.change_norm if self.change_norm > 0 else 0.0


def bake_weight(weight: torch.Tensor, patches: Sequence[WeightPatch], budget: int) -> BakedWeight | None:
    """The baked change of `weight` (the model's own, unpatched) under `patches`, or None when it is zero."""
    if weight.ndim >= 2 and _fusable(patches):
        up, down = _concatenated(weight, patches)
        if up.shape[1] <= budget:
            norm = _factored_norm(up, down)
            return None if norm == 0 else _factors(weight, up, down, True, norm, 0.0)
        return _truncated_factors(weight, up, down, budget)
    change = total_change(weight, patches)
    norm = float(torch.linalg.vector_norm(change))
    if norm == 0:
        return None
    if weight.ndim < 2:
        return BakedWeight(None, None, change, True, norm, 0.0)
    return _truncated_dense(weight, change, budget, norm)


def total_change(weight: torch.Tensor, patches: Sequence[WeightPatch]) -> torch.Tensor:
    """ΔW in fp32: the patches applied in order to a copy of the weight, as the host applies them, minus it."""
    base = weight.detach().to(torch.float32)
    patched = base.clone()
    for patch in patches:
        region = patched.narrow(*patch.offset) if patch.offset else patched
        fuse.apply_packed(region, patch.packed, patch.strength, patch.function)
    return patched.sub_(base)


def _fusable(patches: Sequence[WeightPatch]) -> bool:
    """Every term low-rank (additive), no transform, slices only along rows: concatenation is exact."""
    return all(patch.function is None and (patch.offset is None or patch.offset[0] == 0)
               and all(item[0] == fuse.LOW_RANK for item in patch.packed) for patch in patches)


def _concatenated(weight: torch.Tensor, patches: Sequence[WeightPatch]) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 up [out, K] and down [K, n] of every term, coefficients folded in, row slices placed."""
    rows, n = weight.shape[0], weight[0].numel()
    ups, downs = [], []
    for patch in patches:
        region = weight.narrow(*patch.offset) if patch.offset else weight
        up, down = fuse.stacked_factors(patch.packed, region)
        up = up * patch.strength
        if patch.offset:
            placed = up.new_zeros(rows, up.shape[1])
            placed[patch.offset[1]:patch.offset[1] + patch.offset[2]] = up
            up = placed
        ups.append(up)
        downs.append(down.reshape(-1, n))
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0)


def _factored_norm(up: torch.Tensor, down: torch.Tensor) -> float:
    # ‖up·down‖²_F = trace((upᵀup)(down·downᵀ)): K×K products, never the full-size change.
    return math.sqrt(max(0.0, float(((up.T @ up) * (down @ down.T)).sum())))


def _truncated_factors(weight, up: torch.Tensor, down: torch.Tensor, budget: int) -> BakedWeight | None:
    """The best rank-`budget` approximation of up·down, from a QR of each factor and the SVD of R₁R₂ᵀ."""
    q_up, r_up = torch.linalg.qr(up.to(torch.float64))
    q_down, r_down = torch.linalg.qr(down.T.to(torch.float64))
    u, s, vh = torch.linalg.svd(r_up @ r_down.T)
    k = min(budget, int((s > 0).sum()))
    norm = float(s.square().sum().sqrt())
    if norm == 0:
        return None
    error = float(s[k:].square().sum().sqrt())
    new_up = (q_up @ (u[:, :k] * s[:k])).to(torch.float32)
    new_down = (vh[:k] @ q_down.T).to(torch.float32)
    return _factors(weight, new_up, new_down, error == 0, norm, error)


def _truncated_dense(weight, change: torch.Tensor, budget: int, norm: float) -> BakedWeight:
    matrix = change.reshape(change.shape[0], -1).to(torch.float64)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    k = max(1, min(budget, int((s > s[0] * 1e-12).sum())))
    error = float(s[k:].square().sum().sqrt())
    up = (u[:, :k] * s[:k]).to(torch.float32)
    down = vh[:k].to(torch.float32)
    return _factors(weight, up, down, error <= 1e-7 * norm, norm, error)


def _factors(weight, up, down, exact: bool, norm: float, error: float) -> BakedWeight:
    """Factors shaped as kohya stores them: conv downs keep the kernel, conv ups are 1×1."""
    k = up.shape[1]
    if weight.ndim > 2:
        up = up.reshape(weight.shape[0], k, *([1] * (weight.ndim - 2)))
        down = down.reshape(k, *weight.shape[1:])
    return BakedWeight(up.contiguous(), down.contiguous(), None, exact, norm, error)


def kohya_tensors(name: str, baked: BakedWeight, bias: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of one baked module in kohya's layout, for the host's core loader: alpha = rank, so its
    alpha/rank scale is 1 (every coefficient is already in the factors)."""
    if baked.diff is not None:
        return {f"{name}.diff_b" if bias else f"{name}.diff": baked.diff.contiguous()}
    return {f"{name}.lora_up.weight": baked.up, f"{name}.lora_down.weight": baked.down,
            f"{name}.alpha": torch.tensor(float(baked.rank))}


def total_relative_error(baked: Sequence[BakedWeight]) -> float:
    """‖ΔW − baked‖ / ‖ΔW‖ over every weight together."""
    change = math.sqrt(sum(b.change_norm ** 2 for b in baked))
    return math.sqrt(sum(b.error_norm ** 2 for b in baked)) / change if change > 0 else 0.0
