"""loader.fuse against applying each adapter by itself, in order (no host)."""

from __future__ import annotations

import pytest
import torch

from loader import fuse
from loader.adapter_types import LoRA


def lora(gen, out, rank, inner, kernel=(), scale=0.5, mid=False, dtype=torch.float16):
    if mid:
        return LoRA(up=torch.randn(out, rank, 1, 1, generator=gen).to(dtype),
                    down=torch.randn(rank, inner, 1, 1, generator=gen).to(dtype),
                    mid=torch.randn(rank, rank, *kernel, generator=gen).to(dtype), scale=scale)
    return LoRA(up=torch.randn(out, rank, *(1,) * len(kernel), generator=gen).to(dtype),
                down=torch.randn(rank, inner, *kernel, generator=gen).to(dtype), scale=scale)


def sequential(weight, terms):
    out = weight.to(torch.float32, copy=True)
    for term in terms:
        term.adapter.apply_(out, term.coefficient)
    return out


def relative(a, b, base):
    return ((a - b).norm() / (b - base).norm()).item()


def test_linear_stack_is_one_product_equal_to_sequential():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 32, generator=gen)
    terms = [fuse.Term(lora(gen, 48, r, 32, scale=s), c) for r, s, c in [(4, 2.0, 0.7), (8, 0.5, -1.3), (2, 1.0, 0.2)]]
    packed = fuse.pack(terms)
    assert fuse.rank_of(packed) == 14
    fused = fuse.apply_packed(weight.clone(), packed)
    assert relative(fused, sequential(weight, terms), weight) < 1e-6


def test_conv_and_tucker_fuse_with_plain_entries():
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(16, 8, 3, 3, generator=gen)
    terms = [fuse.Term(lora(gen, 16, 4, 8, kernel=(3, 3)), 0.9), fuse.Term(lora(gen, 16, 3, 8, (3, 3), mid=True), -0.4),
             fuse.Term(lora(gen, 16, 2, 8, kernel=(3, 3), scale=3.0), 1.5)]
    fused = fuse.apply_packed(weight.clone(), fuse.pack(terms), strength=0.5)
    reference = sequential(weight, [fuse.Term(t.adapter, 0.5 * t.coefficient) for t in terms])
    assert relative(fused, reference, weight) < 1e-6


def test_non_linear_entry_splits_the_run_and_keeps_order():
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(24, 20, generator=gen)
    dora = LoRA(up=torch.randn(24, 4, generator=gen), down=torch.randn(4, 20, generator=gen), scale=0.3,
                magnitude=torch.rand(24, generator=gen) + 0.5)
    terms = [fuse.Term(lora(gen, 24, 4, 20), 0.8), fuse.Term(dora, 0.6), fuse.Term(lora(gen, 24, 4, 20), -0.5)]
    packed = fuse.pack(terms)
    assert [item[0] for item in packed] == [fuse.LOW_RANK, fuse.ADAPTER, fuse.LOW_RANK]
    fused = fuse.apply_packed(weight.clone(), packed)
    assert relative(fused, sequential(weight, terms), weight) < 1e-6


def test_half_weight_and_key_function_are_honoured():
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(32, 16, generator=gen).to(torch.float16)
    terms = [fuse.Term(lora(gen, 32, 4, 16), 0.8), fuse.Term(lora(gen, 32, 4, 16), 0.4)]
    fused = fuse.apply_packed(weight.clone(), fuse.pack(terms), function=lambda change: 2 * change)
    change = sequential(torch.zeros(32, 16), terms)
    reference = (weight.float() + 2 * change).to(torch.float16)
    assert fused.dtype == torch.float16
    assert (fused.float() - reference.float()).abs().max().item() <= 1e-2


def peak_allocated_bytes(action) -> int:
    """The most bytes torch's CPU allocator held at once, beyond what it held before, while `action` ran.

    Read from torch.profiler's memory events (every allocation and free of torch's CPU allocator, with
    its size and time); BLAS/oneDNN-internal scratch outside torch's allocator is not seen.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        action()
    events = sorted((event for event in profiler.profiler.kineto_results.events() if event.name() == "[memory]"),
                    key=lambda event: event.start_ns())
    held = peak = 0
    for event in events:
        held += event.nbytes()
        peak = max(peak, held)
    return peak


HALF_CASES = [(torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32),
              (torch.float16, torch.float16), (torch.float32, torch.float32)]


@pytest.mark.parametrize(("dtype", "intermediate"), HALF_CASES, ids=lambda d: str(d).removeprefix("torch."))
def test_fused_update_is_in_place_with_one_row_block_of_temporaries(dtype, intermediate):
    """fp16 / bf16 weights (the host's per-forward and GPU patch dtypes): no full-size fp32 temporary."""
    out, inner, ranks, coefficients = 4096, 512, (8, 4, 12), (0.8, -0.6, 1.2)
    gen = torch.Generator().manual_seed(4)
    weight = (torch.randn(out, inner, generator=gen) * 0.05).to(dtype)
    terms = [fuse.Term(lora(gen, out, r, inner, scale=0.5, dtype=dtype), c)
             for r, c in zip(ranks, coefficients, strict=True)]
    packed = fuse.pack(terms)
    fuse.apply_packed(weight.clone(), packed, intermediate_dtype=intermediate)  # warm-up: one-time probes
    patched = weight.clone()
    peak = peak_allocated_bytes(lambda: fuse.apply_packed(patched, packed, intermediate_dtype=intermediate))

    fp32_factors = (out + inner) * sum(ranks) * 4  # the stacked up and down, in fp32 and once more cast
    bound = fuse.ROW_BLOCK_ELEMENTS * 4 + 2 * fp32_factors + (64 << 10)
    # The shapes let the bound tell one row block from any full-size copy, even one in the weight's dtype.
    assert bound < out * inner * weight.element_size()
    assert peak <= bound, f"peak {peak / 2**20:.2f} MiB > {bound / 2**20:.2f} MiB"

    # Against the exact (fp64) sum: one rounding of the result to the weight's dtype, plus the product's
    # rounding at the intermediate dtype the host asked for (relative to Σ|c·up|·|down|).
    exact, magnitude = sequential_exact(weight, terms)
    error = (patched.double() - exact).abs()
    bound = torch.finfo(dtype).eps * exact.abs() + 2 * torch.finfo(intermediate).eps * magnitude
    assert (error <= bound).all(), (error / bound).max().item()


def sequential_exact(weight, terms):
    """The exact (fp64) result of adding every term in turn, and Σ|coefficient · up| @ |down| (for the bound)."""
    out, magnitude = weight.double(), torch.zeros(weight.shape, dtype=torch.float64)
    for term in terms:
        coefficient, up, down = term.coefficient * term.adapter.scale, term.adapter.up, term.adapter.down
        out += coefficient * (up.double().flatten(1) @ down.double().flatten(1))
        magnitude += abs(coefficient) * (up.double().flatten(1).abs() @ down.double().flatten(1).abs())
    return out, magnitude
