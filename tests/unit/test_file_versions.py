"""A file replaced by another of the same size and mtime (cp -p, rsync -t, unzip, sync clients) is a new
version: caches never serve the old one, and tensors are never read through the old header's offsets."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from loader import cache, files, hashes, versions


def write_lora(path, seed: int, rank: int = 4) -> str:
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for module in ("lora_unet_a", "lora_te_b"):
        tensors[f"{module}.lora_down.weight"] = torch.randn(rank, 32, generator=g)
        tensors[f"{module}.lora_up.weight"] = torch.randn(16, rank, generator=g)
        tensors[f"{module}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))
    return str(path)


def replace_keeping_size_and_mtime(path: str, seed: int, how: str) -> None:
    """Put another LoRA of the same size at `path` and give it the old mtime, as `cp -p` / `rsync -t` do."""
    before = os.stat(path)
    fresh = write_lora(path + ".new", seed)
    assert os.path.getsize(fresh) == before.st_size
    if how == "in place":  # cp -p, unzip over the old file: same inode, contents rewritten
        with open(fresh, "rb") as src, open(path, "r+b") as dst:
            dst.write(src.read())
        os.remove(fresh)
    else:  # rsync -t, sync clients: a new file renamed over the old one
        os.replace(fresh, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def tensors_of(path: str) -> dict[str, torch.Tensor]:
    header = files.read_header(path)
    return files.read_tensors(header)


HOW = ["in place", "renamed over"]


@pytest.mark.parametrize("how", HOW)
def test_same_size_and_mtime_is_a_new_version(tmp_path, how):
    path = write_lora(tmp_path / "a.safetensors", seed=1)
    first = versions.current(path)
    replace_keeping_size_and_mtime(path, seed=2, how=how)
    second = versions.current(path)
    assert (first.size, first.mtime_ns) == (second.size, second.mtime_ns)
    assert first != second
    assert first.fingerprint != second.fingerprint


def test_fingerprint_tells_contents_apart_without_the_timestamps(tmp_path):
    """Where a filesystem keeps no usable ctime (FAT, some SMB mounts), the content fingerprint still differs."""
    one = write_lora(tmp_path / "one.safetensors", seed=1)
    two = write_lora(tmp_path / "two.safetensors", seed=2)
    same = tmp_path / "same.safetensors"
    same.write_bytes(Path(one).read_bytes())
    assert versions.current(one).fingerprint != versions.current(two).fingerprint
    assert versions.current(one).fingerprint == versions.current(same).fingerprint


def test_fingerprint_of_a_large_file_samples_its_data(tmp_path):
    big = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(1024, 1024)}, str(big))  # 4 MiB: past the header bytes, into the samples
    before = versions.current(big).fingerprint
    with open(big, "r+b") as f:
        f.seek(os.path.getsize(big) - 100)
        f.write(b"\x01")
    assert versions.current(big).fingerprint != before


@pytest.mark.parametrize("how", HOW)
def test_reading_after_a_replacement_never_mixes_versions(tmp_path, how):
    path = write_lora(tmp_path / "a.safetensors", seed=1)
    lora_cache = cache.LoraCache()
    loaded = lora_cache.load(path)
    loaded.read(["lora_unet_a.lora_down.weight"])  # a model-only run read the UNet's tensors
    replace_keeping_size_and_mtime(path, seed=2, how=how)
    new = tensors_of(path)
    with pytest.raises(files.FileChangedError, match="changed on disk while it was being read"):
        loaded.read(["lora_te_b.lora_down.weight"])  # the old header's offsets must not read the new file

    names = list(new)
    read = lora_cache.use(path, lambda lora: lora.read(names))
    for name in names:
        assert torch.equal(read[name], new[name]), name
    assert len(lora_cache) == 1 and lora_cache.nbytes == sum(t.numel() * t.element_size() for t in new.values())


@pytest.mark.parametrize("how", HOW)
def test_use_retries_when_the_file_changes_during_the_work(tmp_path, how):
    path = write_lora(tmp_path / "a.safetensors", seed=1)
    lora_cache = cache.LoraCache()
    calls = []

    def work(lora):
        calls.append(lora)
        lora.read(["lora_unet_a.lora_up.weight"])
        if len(calls) == 1:  # the file is swapped between the UNet's and the text encoder's tensors
            replace_keeping_size_and_mtime(path, seed=2, how=how)
        return lora.read(["lora_unet_a.lora_up.weight", "lora_te_b.lora_up.weight"])

    read = lora_cache.use(path, work)
    new = tensors_of(path)
    assert len(calls) == 2
    assert torch.equal(read["lora_unet_a.lora_up.weight"], new["lora_unet_a.lora_up.weight"])
    assert torch.equal(read["lora_te_b.lora_up.weight"], new["lora_te_b.lora_up.weight"])


def test_a_file_that_keeps_changing_is_refused(tmp_path):
    path = write_lora(tmp_path / "a.safetensors", seed=1)
    seeds = iter(range(10, 20))

    def work(lora):
        replace_keeping_size_and_mtime(path, seed=next(seeds), how="in place")
        return lora.read(["lora_unet_a.alpha"])

    with pytest.raises(files.LoraFileError, match="keeps changing on disk"):
        cache.LoraCache().use(path, work)


@pytest.mark.parametrize("how", HOW)
def test_hash_cache_hashes_a_replaced_file_again_across_restarts(tmp_path, how):
    path = write_lora(tmp_path / "a.safetensors", seed=1)
    store = tmp_path / "user" / "hash-cache.json"
    first = hashes.HashCache(store).get(path)
    assert first == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    replace_keeping_size_and_mtime(path, seed=2, how=how)

    restarted = hashes.HashCache(store)
    assert restarted.known(path) is None  # never vouches "same SHA-256" for the new bytes
    second = restarted.get(path)
    assert second == hashlib.sha256(Path(path).read_bytes()).hexdigest() != first
    stored = json.loads(store.read_text())
    assert stored["format"] == hashes.STORE_FORMAT
    assert [sha for _, sha in stored["entries"]] == [second]  # the path's old contents are forgotten


def test_hash_cache_of_the_old_format_is_not_trusted(tmp_path):
    path = write_lora(tmp_path / "a.safetensors", seed=1)
    st = os.stat(path)
    store = tmp_path / "hash-cache.json"
    store.write_text(json.dumps([[os.path.realpath(path), st.st_size, st.st_mtime_ns, "0" * 64]]))
    cached = hashes.HashCache(store)
    assert cached.known(path) is None
    assert cached.get(path) == hashlib.sha256(Path(path).read_bytes()).hexdigest()
