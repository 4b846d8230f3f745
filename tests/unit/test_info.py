"""The info panel's facts and block energy, from small real kohya files (tests/browser/fixtures.py)."""

import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))

import fixtures

from loader import hashes, info


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    return fixtures.write_kohya_lora(tmp_path_factory.mktemp("info") / "a.safetensors", seed=7, rank=4, alpha=2.0)


def test_facts(lora):
    facts = info.lora_facts(lora)
    assert (facts["format"], facts["adapter_kinds"]) == ("kohya", ["lora"])
    assert (facts["base"], facts["base_claimed"]) == ("sd1", "sd1")  # the keys of a 64-wide miniature say nothing
    assert (facts["ranks"], facts["alphas"], facts["modules"], facts["resolution"]) == ([4], [2.0], 5, [512, 512])
    assert facts["tags"][0] == {"tag": "loradeck_style", "count": 40}
    assert facts["size"] == Path(lora).stat().st_size


@pytest.mark.parametrize(("meta", "base"), [
    ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl"),
    ({"ss_base_model_version": "sd_v1"}, "sd1"),
    ({"ss_base_model_version": "sd_2.1"}, "sd2"),
    ({"modelspec.architecture": "flux-1-dev/lora"}, "flux"),
    ({"ss_base_model_version": "sd_3"}, "sd3"),
    ({}, None),
])
def test_base_from_metadata(meta, base):
    assert info.base_from_metadata(meta) == base


def test_block_energy_is_the_norm_of_the_delta(lora):
    tensors = load_file(str(lora))
    expected = {}
    for name, block in zip(fixtures.MINI_SD1_MODULES, ["IN01", "IN04", "M00", "OUT03", "OUT07"], strict=True):
        delta = tensors[f"{name}.lora_up.weight"].float() @ tensors[f"{name}.lora_down.weight"].float()
        expected[block] = float((delta * (2.0 / 4)).square().sum())
    total = sum(expected.values())
    got = info.block_energy(lora)
    assert got["measured"] == 5
    for block, value in expected.items():
        assert got["shares"][block] == pytest.approx(value / total, rel=1e-5)


def test_hash_cache_reads_each_version_once(tmp_path, lora):
    store = tmp_path / "cache" / "hashes.json"
    cache = hashes.HashCache(store)
    first = cache.get(lora)
    assert cache.get(lora) == first and cache.computed == 1
    assert hashes.HashCache(store).known(lora) == first  # remembered across restarts
    assert hashes.autov2(first) == first[:10].upper()
    copy = tmp_path / "b.safetensors"
    copy.write_bytes(Path(lora).read_bytes() + b" ")  # another file version
    assert cache.get(copy) != first and cache.computed == 2
