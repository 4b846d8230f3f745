"""The shared caches under the load ComfyUI puts on them: the prompt worker and the server's route threads
reading, hashing and evicting at once. No exception, the byte bound held at every step, the running byte
count exact, and every result equal to a single-threaded run."""

from __future__ import annotations

import hashlib
import random
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from loader import cache, hashes

FILES = 10
THREADS = 6
ROUNDS = 60
MODULES = 150


def make_files(folder) -> list[str]:
    paths = []
    for i in range(FILES):
        g = torch.Generator().manual_seed(i)
        # Many small tensors: a walk over a file's tensors is long enough for another thread to cut into it.
        tensors = {f"lora_unet_m{j}.lora_down.weight": torch.randn(4, 8 + i, generator=g) for j in range(MODULES)}
        tensors |= {f"lora_unet_m{j}.lora_up.weight": torch.randn(8, 4, generator=g) for j in range(MODULES)}
        path = str(folder / f"f{i}.safetensors")
        save_file(tensors, path)
        paths.append(path)
    return paths


def checksum(lora: cache.LoadedLora, names: list[str]) -> float:
    return float(sum(t.double().sum() for t in lora.read(names).values()))


@pytest.fixture
def eager_thread_switches():
    """Threads switch every microsecond instead of every 5 ms: races show up in a short test."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_threads_reading_hashing_and_evicting(tmp_path, eager_thread_switches):
    paths = make_files(tmp_path)
    names = {p: sorted(cache.read_lora(p).header.tensors) for p in paths}
    expected = {p: checksum(cache.read_lora(p), names[p]) for p in paths}
    sha = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
    file_bytes = {p: sum(i.nbytes for i in cache.read_lora(p).header.tensors.values()) for p in paths}
    # Room for about three files' tensors: most loads evict something.
    lora_cache = cache.LoraCache(max_bytes=3 * max(file_bytes.values()))
    hash_cache = hashes.HashCache(tmp_path / "user" / "hash-cache.json")
    errors: list[BaseException] = []
    over_bound: list[int] = []
    start = threading.Barrier(THREADS)

    def worker(seed: int):
        rng = random.Random(seed)
        start.wait()
        try:
            for _ in range(ROUNDS):
                path = rng.choice(paths)
                action = rng.random()
                if action < 0.55:  # a prompt or the info panel reads some or all of a file's tensors
                    part = rng.sample(names[path], rng.randint(1, len(names[path])))
                    got = lora_cache.use(path, lambda lora, part=part: checksum(lora, part))
                    reference = checksum(cache.read_lora(path), part)
                    assert abs(got - reference) <= 1e-9 * max(1.0, abs(reference)), (path, got, reference)
                elif action < 0.85:  # re-link by hash
                    assert hash_cache.get(path) == sha[path]
                elif action < 0.95:
                    assert lora_cache.use(path, lambda lora, p=path: checksum(lora, names[p])) == expected[path]
                else:
                    lora_cache.clear()
                total = lora_cache.nbytes
                if total > lora_cache.max_bytes:
                    over_bound.append(total)
        except BaseException as e:  # collected: an assert in a thread would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert not over_bound, f"byte bound {lora_cache.max_bytes} exceeded: {over_bound[:5]}"
    held = list(lora_cache._entries.values())
    assert lora_cache.nbytes == sum(entry.nbytes for entry in held)  # the running count is exact
    assert lora_cache.nbytes == sum(t.numel() * t.element_size() for e in held for t in e.tensors.values())
    assert hash_cache.computed == len({p for p in paths if hash_cache.known(p)})  # each file hashed once
