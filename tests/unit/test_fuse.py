"""loader.fuse against applying each adapter by itself, in order (no host)."""

from __future__ import annotations

import torch

from loader import fuse
from loader.adapters import LoRA


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
