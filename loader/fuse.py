"""One weight change for a whole stack: Σ cᵢ·ΔWᵢ as a single matrix product over the stacked low-rank factors.

Stacking N LoRAs the usual way costs, per weight, N matrix products of rank r, N full-size temporaries and
N read-modify-writes of the weight. Here the factors of consecutive low-rank entries are concatenated
(up: [out, N·r], down: [N·r, in]) with each entry's coefficient (strength × block ratio × alpha/rank)
folded into the smaller factor, and the weight is updated in place by one rank-N·r product, in row blocks
that stay in cache: the only temporaries are the factors and one row block of the product, whatever the
weight's dtype. Entries that are not low-rank (DoRA, LoHa, LoKr, full, OFT, IA3, …) are applied by their
own `apply_` between the fused runs, so the stack order — which matters for the non-linear ones — is kept.

The product runs in the dtype the host asks patch math to run in (`intermediate_dtype`: fp32 when it
patches once, the weight's own fp16/bf16 when it patches on every forward, as its own LoRA math does), and
the result is added to the weight in the weight's dtype.

A stack is packed into plain lists of tensors, floats and adapter objects (`pack`), the form a host can
move between devices and rebuild from, and applied with `apply_packed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace

import torch

from .adapter_types import LoRA

LOW_RANK = "lowrank"
ADAPTER = "adapter"


@dataclass(frozen=True)
class Term:
    """One stack entry's contribution to one weight: `coefficient` × the adapter's change."""

    adapter: object
    coefficient: float


def is_low_rank(adapter) -> bool:
    """A LoRA / LoCon / Tucker adapter without DoRA: its change is scale · up @ (mid ×) down, additive in the
    strength, so it joins the fused product. Every other type is applied by its own `apply_`."""
    return isinstance(adapter, LoRA) and adapter.linear and adapter.reshape is None


def pack(terms: Sequence[Term]) -> list:
    """The terms as host-movable data: ("lowrank", c, scale, up, down, mid) or ("adapter", c, adapter)."""
    packed = []
    for term in terms:
        adapter = term.adapter
        if is_low_rank(adapter):
            packed.append((LOW_RANK, term.coefficient, float(adapter.scale), adapter.up, adapter.down, adapter.mid))
        else:
            packed.append((ADAPTER, term.coefficient, adapter))
    return packed


def widened_shape(packed: Sequence) -> tuple[int, ...] | None:
    """The shape the weight is zero-padded to before the terms apply (a control LoRA's img_in), or None."""
    shapes = [item[2].reshape for item in packed if item[0] == ADAPTER and getattr(item[2], "reshape", None)]
    return max(shapes) if shapes else None


def coefficients(packed: Sequence) -> list[float]:
    """Each packed term's coefficient (strength × block ratio), in stack order."""
    return [item[1] for item in packed]


def rank_of(packed: Sequence) -> int:
    """Total rank of the fused low-rank factors (the K of the one matrix product)."""
    return sum(item[3].shape[1] for item in packed if item[0] == LOW_RANK)


def apply_packed(weight: torch.Tensor, packed: Sequence, strength: float = 1.0,
                 function: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 intermediate_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Add every packed term to `weight` in stack order, in place; consecutive low-rank terms in one product.

    `strength` multiplies every coefficient; `function`, when given, maps each fused change before it is
    added (the host's per-key transform); `intermediate_dtype` is the dtype the host asks the math to run
    in. Returns `weight`.
    """
    compute_dtype = product_dtype(intermediate_dtype, weight.device)
    run: list = []
    for item in packed:
        if item[0] == LOW_RANK:
            run.append(item)
            continue
        if run:
            _add_low_rank_(weight, run, strength, function, compute_dtype)
            run = []
        _, coefficient, adapter = item
        _apply_adapter_(weight, adapter, strength * coefficient, function)
    if run:
        _add_low_rank_(weight, run, strength, function, compute_dtype)
    return weight


def product_dtype(intermediate_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype of the fused product: the host's intermediate dtype when it is fp16 or bf16, else fp32.

    fp16 on a CPU runs in fp32: CPUs have no fast fp16 product (it is tens of times slower than fp32 there),
    and fp32 is the more exact of the two.
    """
    if intermediate_dtype == torch.bfloat16 or (intermediate_dtype == torch.float16 and device.type != "cpu"):
        return intermediate_dtype
    return torch.float32


def stacked_factors(run: Sequence, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 (up [out, K], down [K, n]) on the weight's device with every coefficient folded into the smaller one."""
    out_features = weight.shape[0]
    n = weight.numel() // out_features if out_features else 0
    device = weight.device
    ups, downs, ranks = [], [], []
    for _, _, _, up, down, mid in run:
        rank = up.shape[1]
        ups.append(up.to(device).reshape(out_features, rank))
        if mid is None:
            downs.append(down.to(device).reshape(rank, n))
        else:  # Tucker: the core mid ×₁ down is this entry's down factor, [rank of mid, in·kh·kw]
            downs.append(_tucker_core(mid, down, device).reshape(rank, n))
        ranks.append(rank)
    # Concatenated and converted to fp32 in one pass per factor matrix, not one per entry.
    total = sum(ranks)
    up = torch.cat(ups, dim=1, out=torch.empty(out_features, total, dtype=torch.float32, device=device))
    down = torch.cat(downs, dim=0, out=torch.empty(total, n, dtype=torch.float32, device=device))
    per_rank = [item[1] * item[2] for item, rank in zip(run, ranks, strict=True) for _ in range(rank)]
    coefficients = torch.tensor(per_rank, dtype=torch.float32, device=device)
    if out_features <= n:
        up.mul_(coefficients)
    else:
        down.mul_(coefficients[:, None])
    return up, down


def add_product_(target: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> None:
    """target += up @ down in place, for contiguous 2-D tensors; up and down share a dtype, which may be
    wider than the target's (each element is then rounded once, as the sum is written back).

    On accelerators a same-dtype product accumulates straight into the target (one GEMM, no temporary).
    Otherwise it runs in row blocks of `ROW_BLOCK_ELEMENTS`: at most one block-sized temporary, and each
    block is added while it is in cache.
    """
    if target.device.type != "cpu" and target.dtype == up.dtype:
        target.addmm_(up, down)
        return
    rows = max(1, ROW_BLOCK_ELEMENTS // max(1, target.shape[1]))
    add_rows_ = _row_adder(target, up, down, rows)
    for start in range(0, target.shape[0], rows):
        add_rows_(slice(start, start + rows))


def _row_adder(target: torch.Tensor, up: torch.Tensor, down: torch.Tensor, rows: int) -> Callable[[slice], None]:
    """A function adding rows `block` of up @ down to the target in place, with the fastest product at hand.

    On CPU, PyTorch's oneDNN linear runs about twice as fast as the BLAS behind `addmm` on AVX-512 machines
    (and several times faster at small rank, where `addmm` is bound by reading the target); it is used for
    fp32 when this torch build has it and a probe confirms it agrees with `addmm` to fp32 accuracy.
    """
    if target.dtype != up.dtype:
        # A wider product (fp32 for a half weight): each block is summed in one reused buffer of the
        # product's dtype and written back, rounded once. (A mixed-dtype `add_` would allocate two more blocks.)
        buffer = torch.empty(min(rows, target.shape[0]), target.shape[1], dtype=up.dtype, device=target.device)

        def add_wide_(block: slice) -> None:
            part = target[block]
            total = buffer[:part.shape[0]]
            total.copy_(part).addmm_(up[block], down)
            part.copy_(total)
        return add_wide_
    if target.device.type == "cpu" and up.dtype == torch.float32 and _onednn_usable():
        down_t = down.t().contiguous()
        return lambda block: target[block].add_(
            torch.ops.mkldnn._linear_pointwise(up[block], down_t, None, "none", [], ""))
    return lambda block: target[block].addmm_(up[block], down)


ROW_BLOCK_ELEMENTS = 1 << 19  # elements of one row block of the product (2 MiB in fp32)


_onednn: list[bool] = []


def _onednn_usable() -> bool:
    if not _onednn and os.environ.get("LORADECK_ONEDNN", "1") == "0":
        _onednn.append(False)
    if not _onednn:
        try:
            generator = torch.Generator().manual_seed(0)
            up, down = torch.randn(48, 40, generator=generator), torch.randn(40, 56, generator=generator)
            product = torch.ops.mkldnn._linear_pointwise(up, down.t().contiguous(), None, "none", [], "")
            reference = up @ down
            _onednn.append(bool(((product - reference).norm() / reference.norm()).item() < 1e-6))
        except (AttributeError, RuntimeError, NotImplementedError):
            _onednn.append(False)
    return _onednn[0]


def _tucker_core(mid: torch.Tensor, down: torch.Tensor, device) -> torch.Tensor:
    mid = mid.to(device=device, dtype=torch.float32)
    down = down.to(device=device, dtype=torch.float32).flatten(start_dim=1)
    return torch.einsum("mn...,ni->mi...", mid, down)


def _add_low_rank_(weight: torch.Tensor, run: Sequence, strength: float, function,
                   compute_dtype: torch.dtype) -> None:
    up, down = stacked_factors(run, weight)
    if strength != 1.0:
        (up if up.numel() <= down.numel() else down).mul_(strength)
    up, down = up.to(compute_dtype), down.to(compute_dtype)
    if function is None and weight.is_contiguous():
        add_product_(weight.view(up.shape[0], down.shape[1]), up, down)
        return
    # The host's per-key transform maps the whole change (and a strided weight has no row view): full size.
    change = (up @ down).reshape(weight.shape)
    if function is not None:
        change = function(change)
    weight += change.to(weight.dtype)


def _apply_adapter_(weight: torch.Tensor, adapter, strength: float, function) -> None:
    adapter = _on_device(adapter, weight.device)
    if function is None and weight.dtype == torch.float32:
        adapter.apply_(weight, strength)
        return
    # The adapter computes in fp32 on a copy (one full-size temporary, as the host's own math for these
    # types); the change is mapped and added in the weight's own dtype.
    change = weight.to(torch.float32, copy=True)
    adapter.apply_(change, strength)
    change.sub_(weight)
    if function is not None:
        change = function(change)
    weight += change.to(weight.dtype)


def _on_device(adapter, device: torch.device):
    """The adapter with its tensors on `device` (a copy only when some tensor lives elsewhere)."""
    if hasattr(adapter, "on"):
        return adapter.on(device)
    if not is_dataclass(adapter):
        return adapter
    moved = {f.name: getattr(adapter, f.name).to(device) for f in fields(adapter)
             if isinstance(getattr(adapter, f.name), torch.Tensor) and getattr(adapter, f.name).device != device}
    return replace(adapter, **moved) if moved else adapter
