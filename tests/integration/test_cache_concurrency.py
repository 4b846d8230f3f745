"""Prompts run by the host's executor while route threads read the same shared caches, as in the server:
the info panel (facts, block energy), the block editor (a LoRA's blocks), hashing for re-link, and
evictions, with the LoRA cache bounded to about two files so that it evicts all the time.

Passes when no thread raises, the byte bound holds at every sample, and every prompt patches the model and
text encoder bit for bit as in a single-threaded run.
"""

from __future__ import annotations

import random
import sys
import threading

import hosting
import probes
import producers
import pytest

FILES = 4
PROMPTS = 6
ROUTE_THREADS = 4


@pytest.fixture(scope="module")
def lora_paths(loras_dir):
    folder = loras_dir / "concurrency"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(FILES):
        unet = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=2 + i, alpha=4,
                                     seed=60 + i)
        text = producers.attach_lora(producers.transformers_clip_text(), producers.TEXT_TARGETS, rank=2, alpha=2,
                                     seed=70 + i)
        paths.append(producers.save_kohya_sd15(str(folder / f"c{i}.safetensors"), unet, text))
    return paths


@pytest.fixture
def small_cache(pack, lora_paths):
    shared = pack.loader.cache.shared_cache
    largest = max(sum(t.nbytes for t in pack.loader.files.read_header(p).tensors.values()) for p in lora_paths)
    saved = shared.max_bytes
    shared.clear()
    shared.max_bytes = 2 * largest
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often: races show up in a short test
    yield shared
    sys.setswitchinterval(interval)
    shared.max_bytes = saved
    shared.clear()


@pytest.fixture
def probe_nodes(sd15, sd15_clip):
    probes.MODELS.update(model=sd15, clip=sd15_clip)
    added = probes.register("Concurrency")
    yield
    probes.unregister(added)


def stack_prompt(number: int) -> dict:
    rng = random.Random(number)
    rows = [{"lora": f"concurrency/c{i}.safetensors", "strength": round(rng.uniform(-1, 1), 3),
             "clip_strength": round(rng.uniform(-1, 1), 3), "on": True}
            for i in rng.sample(range(FILES), 3)]
    return probes.stack_prompt("Concurrency", rows)


def digests(outputs: dict) -> tuple:
    return outputs["3"]["patched_weights"], outputs["3"]["conditioning"]


def test_prompts_while_routes_read_hash_and_evict(pack, lora_paths, small_cache, probe_nodes, tmp_path):
    single = {n: digests(hosting.Executor().run(stack_prompt(n))) for n in range(PROMPTS)}
    small_cache.clear()
    loader = pack.loader
    hash_cache = loader.hashes.HashCache(tmp_path / "hash-cache.json")
    stop = threading.Event()
    errors: list[BaseException] = []
    samples: list[int] = []

    def route_thread(seed: int):
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                path = rng.choice(lora_paths)
                action = rng.randrange(5)
                if action == 0:
                    loader.info.lora_facts(path)
                elif action == 1:
                    assert loader.info.block_energy(path)["measured"] > 0
                elif action == 2:
                    loader.spec_view.lora_blocks(path)
                elif action == 3:
                    hash_cache.get(path)
                else:
                    small_cache.clear()
                samples.append(small_cache.nbytes)
        except BaseException as e:  # collected: an assert in a thread would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=route_thread, args=(seed,)) for seed in range(ROUTE_THREADS)]
    for thread in threads:
        thread.start()
    try:
        concurrent = {n: digests(hosting.Executor().run(stack_prompt(n))) for n in range(PROMPTS)}
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[:3]
    assert len(samples) > 50, "the route threads hardly ran"
    assert max(samples) <= small_cache.max_bytes, (max(samples), small_cache.max_bytes)
    assert concurrent == single
    held = list(small_cache._entries.values())
    assert small_cache.nbytes == sum(t.numel() * t.element_size() for e in held for t in e.tensors.values())
