"""LoraDeckBake on a full-size SDXL-structured UNet (random weights): 8 kohya LoRAs of rank 32 baked into one.

    .venv/bin/python scripts/bench_bake.py                 # CPU; prints a markdown table
    .venv/bin/python scripts/bench_bake.py --arch sd15 --sample 40

What is measured, in one process:
- the whole bake (LoraDeckBake's `bake_stack`: the stack applied as LoRA Deck Apply applies it, each weight
  factored, the file written atomically), at an exact budget (rank 256 = 8 × 32) and a truncating one (64);
- the peak memory it adds over the built model (resident set, sampled every 5 ms): one weight's change at
  a time, never the whole model's;
- against the host's core path to one LoRA from a stack (a chain of core LoRA loads, then core's own
  `LoraSave` extraction, `comfy_extras.nodes_lora_extract.extract_lora`: the full-size difference of each
  weight and its SVD), on the same `--sample` weights for both: core's extraction is too slow to run over
  a whole SDXL UNet on a small CPU, so the ratio is per weight on that sample, with every file already read
  on both sides (ours: the stack's factors; core: its loader chain's patches).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_models as bench

COUNT = 8
STRENGTHS = bench.STRENGTHS[:COUNT]


class PeakMemory:
    """The largest resident set seen while the block runs, sampled by a thread."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.start = bench.rss_bytes()
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, bench.rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, bench.rss_bytes())

    @property
    def added(self) -> int:
        return self.peak - self.start


def bake_whole(pack, model, stack, rank: int) -> tuple[float, int, str]:
    baking = sys.modules[f"{pack.__name__}.nodes.baking"]
    with PeakMemory() as memory:
        start = time.perf_counter()
        report, _ = baking.bake_stack(model, None, stack, f"bench/baked_r{rank}", rank, overwrite=True)
        seconds = time.perf_counter() - start
    return seconds, memory.added, report.splitlines()[0]


def per_weight_sample(pack, model, stack, names_dir: Path, rank: int, sample: int) -> tuple[float, float, int]:
    """(ours, core) seconds over the same `sample` weights (evenly spread over the UNet)."""
    import comfy.lora
    import comfy.sd
    import comfy.utils
    from comfy_extras.nodes_lora_extract import extract_lora

    baking = sys.modules[f"{pack.__name__}.nodes.baking"]
    bake = sys.modules[f"{pack.__name__}.loader.bake"]
    patching = sys.modules[f"{pack.__name__}.nodes.patching"]
    entries = sys.modules[f"{pack.__name__}.loader.stack"].entries_from_stack(stack)
    ours_model, _, _ = patching.apply_stack(model, None, entries)
    jobs = baking._jobs(model, ours_model, comfy.lora.model_lora_keys_unet(model.model, {}), "lora_unet_")
    chosen = jobs[:: max(1, len(jobs) // sample)][:sample]
    start = time.perf_counter()
    for _, _, weight, patches in chosen:
        bake.bake_weight(weight, patches, rank)
    ours = time.perf_counter() - start

    core_model = model
    for name, strength, _ in stack:  # core's loader chain (not timed, as the stack's files are read above)
        lora = comfy.utils.load_torch_file(str(names_dir / name), safe_load=True)
        core_model, _ = comfy.sd.load_lora_for_models(core_model, None, lora, strength, 0)
    start = time.perf_counter()
    for key, _, weight, _ in chosen:
        original = weight.detach().float()
        diff = comfy.lora.calculate_weight(core_model.patches[key], original.clone(), key) - original
        extract_lora(diff, rank)
    core = time.perf_counter() - start
    return ours, core, len(chosen)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=tuple(bench.ARCHS), default="sdxl")
    parser.add_argument("--sample", type=int, default=24, help="weights in the per-weight comparison with core")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--sample-only", action="store_true", help="only the per-weight comparison with core")
    parser.add_argument("--loras", default=os.path.join(tempfile.gettempdir(), "loradeck-bench-loras"))
    args = parser.parse_args(argv)
    folder = Path(args.loras)
    folder.mkdir(parents=True, exist_ok=True)
    pack, _ = bench.boot("cpu", str(folder), [], args.threads)
    names = bench.write_loras(args.arch, COUNT, folder)
    stack = [(name, strength, strength) for name, strength in zip(names, STRENGTHS, strict=True)]
    model = bench.build_model(args.arch, "cpu")
    model_bytes = sum(p.numel() * p.element_size() for p in model.model.parameters())
    print(f"| {args.arch.upper()} UNet, {COUNT} LoRAs of rank {bench.RANK} | time | memory added | result |")
    print("|---|---:|---:|---|")
    for rank in () if args.sample_only else (COUNT * bench.RANK, 64):
        seconds, added, line = bake_whole(pack, model, stack, rank)
        print(f"| LoraDeckBake, rank budget {rank} | {seconds:.1f} s | {bench.gib(added)} "
              f"(model: {bench.gib(model_bytes)}) | {line} |")
    ours, core, count = per_weight_sample(pack, model, stack, folder, 64, args.sample)
    print(f"| {count} weights at rank 64: LoraDeckBake / core LoraSave extraction (per weight, files read) | "
          f"{ours:.2f} s / {core:.2f} s | | ratio {ours / core:.3f}× |")


if __name__ == "__main__":
    main()
