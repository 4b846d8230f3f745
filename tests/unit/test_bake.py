"""The bake's math on known matrices: exact concatenation, truncation errors against a known spectrum, and
the file it writes (read back by the safetensors library; a killed writer leaves the old file intact)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loader import atomic, bake, fuse, safetensors_out
from loader.adapter_types import LoRA

REPO = Path(__file__).resolve().parents[2]


def low_rank(up: torch.Tensor, down: torch.Tensor, coefficient: float = 1.0, alpha: float | None = None):
    """A packed low-rank term as nodes/patching registers it (scale alpha/rank, coefficient = strength)."""
    rank = down.shape[0]
    adapter = LoRA(up=up, down=down, scale=(alpha or rank) / rank)
    return fuse.pack([fuse.Term(adapter, coefficient)])


def with_spectrum(singular_values, rows: int, cols: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """up [rows, k] and down [k, cols] whose product has exactly these singular values."""
    g = torch.Generator().manual_seed(seed)
    k = len(singular_values)
    q_left, _ = torch.linalg.qr(torch.randn(rows, k, generator=g, dtype=torch.float64))
    q_right, _ = torch.linalg.qr(torch.randn(cols, k, generator=g, dtype=torch.float64))
    s = torch.tensor(singular_values, dtype=torch.float64)
    return (q_left * s).float(), q_right.T.contiguous().float()


def test_exact_when_the_ranks_fit():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 40, generator=g)
    ups = [torch.randn(24, r, generator=g) for r in (4, 8)]
    downs = [torch.randn(r, 40, generator=g) for r in (4, 8)]
    patches = [bake.WeightPatch(low_rank(ups[0], downs[0], 0.7, alpha=2.0) + low_rank(ups[1], downs[1], -0.4))]
    baked = bake.bake_weight(weight, patches, budget=12)
    expected = 0.7 * (2.0 / 4) * ups[0] @ downs[0] - 0.4 * ups[1] @ downs[1]
    assert baked.exact and baked.rank == 12 and baked.error_norm == 0.0
    assert torch.allclose(baked.up @ baked.down, expected, rtol=1e-5, atol=1e-5)
    assert math.isclose(baked.change_norm, float(expected.norm()), rel_tol=1e-5)


def test_row_slices_of_a_fused_weight_are_placed():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(30, 16, generator=g)
    up, down = torch.randn(10, 2, generator=g), torch.randn(2, 16, generator=g)
    patches = [bake.WeightPatch(low_rank(up, down), offset=(0, 10, 10))]
    baked = bake.bake_weight(weight, patches, budget=8)
    expected = torch.zeros(30, 16)
    expected[10:20] = up @ down
    assert baked.exact and torch.allclose(baked.up @ baked.down, expected, atol=1e-6)


SPECTRUM = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize("budget", [1, 3, 5])
def test_truncation_error_of_a_known_spectrum(budget):
    """Above the budget, the error is that of the best rank-k approximation: √(Σ_{i>k} sᵢ²) / √(Σ sᵢ²)."""
    up, down = with_spectrum(SPECTRUM, 48, 32, seed=2)
    weight = torch.zeros(48, 32)
    baked = bake.bake_weight(weight, [bake.WeightPatch(low_rank(up, down))], budget)
    pinned = math.sqrt(sum(s * s for s in SPECTRUM[budget:]) / sum(s * s for s in SPECTRUM))
    measured = float((up @ down - baked.up @ baked.down).norm() / (up @ down).norm())
    assert not baked.exact and baked.rank == budget
    assert math.isclose(baked.relative_error, pinned, rel_tol=1e-5)
    assert math.isclose(measured, pinned, rel_tol=1e-4)


def test_a_type_that_is_not_low_rank_is_factored_from_its_whole_change():
    """A full-weight change (as a LoHa, LoKr or full diff gives) of known spectrum, through the dense SVD."""
    up, down = with_spectrum(SPECTRUM, 20, 12, seed=3)

    class Full:  # the adapter protocol fuse applies: apply_(weight, strength) in place
        def apply_(self, weight, strength):
            weight += strength * (up @ down)

    weight = torch.randn(20, 12, generator=torch.Generator().manual_seed(4))
    patch = bake.WeightPatch([(fuse.ADAPTER, 0.5, Full())])
    exact = bake.bake_weight(weight, [patch], budget=6)
    assert exact.exact and torch.allclose(exact.up @ exact.down, 0.5 * up @ down, atol=1e-5)
    truncated = bake.bake_weight(weight, [patch], budget=2)
    pinned = math.sqrt(sum(s * s for s in SPECTRUM[2:]) / sum(s * s for s in SPECTRUM))
    assert math.isclose(truncated.relative_error, pinned, rel_tol=1e-5)


def test_conv_factors_take_kohya_shapes():
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(8, 6, 3, 3, generator=g)
    up, down = torch.randn(8, 2, 1, 1, generator=g), torch.randn(2, 6, 3, 3, generator=g)
    baked = bake.bake_weight(weight, [bake.WeightPatch(low_rank(up, down))], budget=4)
    assert baked.up.shape == (8, 2, 1, 1) and baked.down.shape == (2, 6, 3, 3)
    tensors = bake.kohya_tensors("lora_unet_conv", baked)
    assert float(tensors["lora_unet_conv.alpha"]) == 2.0


def test_written_file_reads_back_with_the_safetensors_library(tmp_path):
    tensors = {"b.lora_up.weight": torch.randn(3, 2), "a.alpha": torch.tensor(2.0),
               "c.diff": torch.arange(5, dtype=torch.float16)}
    path = tmp_path / "x.safetensors"
    with atomic.open_atomic(path) as f:
        safetensors_out.write(f, tensors, {"k": "v"})
    back = load_file(str(path))
    assert set(back) == set(tensors) and all(torch.equal(back[n], tensors[n]) for n in tensors)
    first = path.read_bytes()
    with atomic.open_atomic(path, replace=True) as f:
        safetensors_out.write(f, dict(reversed(tensors.items())), {"k": "v"})
    assert path.read_bytes() == first  # the same tensors and metadata: the same bytes


WRITER = """
import sys, torch
sys.path.insert(0, {repo!r})
from loader import atomic, safetensors_out
tensors = {{f"t{{i}}": torch.full((4096, 4096), float(i)) for i in range(24)}}  # 1.6 GB: takes a while
with atomic.open_atomic({path!r}, replace=True) as f:
    safetensors_out.write(f, tensors, {{}})
"""


def test_killing_the_bake_mid_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "baked.safetensors"
    path.write_bytes(b"the old file")
    child = subprocess.Popen([sys.executable, "-c", WRITER.format(repo=str(REPO), path=str(path))])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            if temps and temps[0].stat().st_size > 64 * 1024 * 1024:
                break
            assert child.poll() is None, "the writer finished before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the writer never started writing")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert path.read_bytes() == b"the old file"
