"""The benchmark's two variants (scripts/bench.py: LoRA Deck Stack → Apply, and a chain of the host's core
LoraLoader nodes) run against the live nodes and patch the same weights, so the figures the README quotes
time working code. Reference: the host's own load_lora_for_models per LoRA (bench.check_against_host, which
the benchmark also prints); tolerance ‖ours − host‖/‖host change‖ ≤ 1e-5 (fp32 files, miniature SD1 UNet)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import hosting
import producers
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPTS))  # bench.py imports its sibling modules, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("loradeck_bench", SCRIPTS / "bench.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


@pytest.fixture(scope="module")
def names(loras_dir, pack):
    made = []
    for i, targets in enumerate((producers.UNET_TARGETS, ["to_q", "to_v", "ff.net.2", "conv1"])):
        unet = producers.attach_lora(producers.diffusers_sd15_unet(), targets, rank=4, alpha=8, seed=70 + i,
                                     init_scale=0.4)
        name = f"bench_variant_{i}.safetensors"
        producers.save_kohya_sd15(str(loras_dir / name), unet, None)
        made.append(name)
    return made


def test_both_benchmark_variants_patch_the_same_weights(bench, names):
    base = hosting.mini_model("SD15", seed=0)
    strengths = bench.STRENGTHS[: len(names)]
    ours = bench.Ours(None, base).patched(names, strengths)
    host = bench.Host(None, base).patched(names, strengths)
    assert ours.patches and set(ours.patches) == set(host.patches)
    assert bench.check_against_host(base, ours, names, strengths) <= TOLERANCE
