"""LoRA Deck against the host's core LoRA loaders, on a full-size SD1.5-structured UNet (random weights).

    .venv/bin/python scripts/bench.py                      # CPU, N = 1, 4, 8, 16, writes docs/benchmarks.md
    .venv/bin/python scripts/bench.py --device cuda --quick --markdown gpu.md

What is measured, for N LoRAs of rank 32 (kohya files written here from random factors, fp16, alpha 16):
- sampler-ready: node execution (LoraDeckStack + LoraDeckApply, or a chain of N `nodes.LoraLoader().load_lora`)
  plus the host's own `comfy.model_management.load_models_gpu([model])`, in a fresh process;
- strength change: the first LoRA's strength changed and the same again in that process (the host's loader
  instances keep their file cache, as the executor keeps node objects; every loader after the changed one
  re-executes, which for the first is all of them);
- peak RSS of the process (and its growth over the built model), and on CUDA the peak allocated memory.
Each variant runs in its own process, alternated (ours, host, ours, host …); the best of the repeats counts.

The per-forward table is what lowvram / dynamic-VRAM mode pays on every step: all patched weights computed
once with the host's `comfy.lora.calculate_weight`, against the floor of one rank-N·r matrix product per
weight, and the fraction of the measured copy bandwidth the fused patch reaches (fp32 weight read + written).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_forward import copy_bandwidth, forward_table, time_floor, time_patches
from bench_models import (
    ARCHS,
    RANK,
    REPO,
    STRENGTH_STEP,
    STRENGTHS,
    boot,
    build_model,
    cpu_seconds,
    gib,
    lora_names,
    peak_rss_bytes,
    rss_bytes,
    sync,
    write_loras,
)

# ---------------------------------------------------------------------------------------------- variants


class Ours:
    def __init__(self, pack, base):
        import nodes

        self.base = base
        self.stack_node = nodes.NODE_CLASS_MAPPINGS["LoraDeckStack"]
        self.apply_node = nodes.NODE_CLASS_MAPPINGS["LoraDeckApply"]

    def patched(self, names, strengths):
        rows = [{"lora": n, "strength": s, "clip_strength": 0.0} for n, s in zip(names, strengths, strict=True)]
        stack = self.stack_node.execute(rows=rows).args[0]  # outputs are only appended: take by position
        model = self.apply_node.execute(model=self.base, lora_stack=stack).args[0]
        return model


class Host:
    """A chain of the host's core LoraLoader nodes; each object keeps its own file cache, as in the executor."""

    def __init__(self, pack, base):
        self.base = base
        self.loaders: list = []

    def patched(self, names, strengths):
        import nodes

        while len(self.loaders) < len(names):
            self.loaders.append(nodes.LoraLoader())
        model = self.base
        for loader, name, strength in zip(self.loaders, names, strengths, strict=False):
            model, _ = loader.load_lora(model, None, name, strength, 0.0)
        return model


VARIANTS = {"ours": Ours, "host": Host}


def run_variant(args) -> dict:
    """One variant in this process: sampler-ready time, strength-change time, memory; JSON on stdout."""
    pack, stubbed = boot(args.device, args.loras, args.stub, args.threads)
    import comfy.model_management
    import torch

    base = build_model(args.arch, args.device)
    names = lora_names(args.arch, args.n)
    strengths = STRENGTHS[: args.n]
    variant = VARIANTS[args.variant](pack, base)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = rss_bytes()
    sync(args.device)
    start, start_cpu = time.perf_counter(), cpu_seconds()
    model = variant.patched(names, strengths)
    nodes_s = time.perf_counter() - start
    comfy.model_management.load_models_gpu([model])
    sync(args.device)
    ready_s, ready_cpu = time.perf_counter() - start, cpu_seconds() - start_cpu

    changed = [strengths[0] + STRENGTH_STEP, *strengths[1:]]
    start, start_cpu = time.perf_counter(), cpu_seconds()
    model = variant.patched(names, changed)
    comfy.model_management.load_models_gpu([model])
    sync(args.device)
    change_s, change_cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    result = {
        "variant": args.variant, "n": args.n, "ready_s": ready_s, "nodes_s": nodes_s, "change_s": change_s,
        "ready_cpu": ready_cpu, "change_cpu": change_cpu,
        "peak_rss": peak_rss_bytes(), "rss_before": rss_before, "patched_keys": len(model.patches),
        "patches_per_key": max(len(p) for p in model.patches.values()), "stubbed": stubbed,
    }
    if args.device == "cuda":
        result["peak_cuda"] = torch.cuda.max_memory_allocated()
    if args.variant == "ours":
        result["max_rel_error"] = check_against_host(base, model, names, changed)
    return result


def check_against_host(base, model, names, strengths, sample: int = 24) -> float:
    """Worst ‖ours − host‖/‖host change‖ over a spread of keys: our patches against the host's unfused
    per-LoRA patches (its own load_lora + LoRAAdapter math), both computed in fp32 by calculate_weight."""
    import comfy.lora
    import comfy.sd
    import comfy.utils
    import folder_paths
    import torch

    reference = base
    for name, strength in zip(names, strengths, strict=True):
        lora = comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise("loras", name), safe_load=True)
        reference, _ = comfy.sd.load_lora_for_models(reference, None, lora, strength, 0.0)
    keys = sorted(model.patches)
    worst = 0.0
    device = model.load_device
    for key in keys[:: max(1, len(keys) // sample)]:
        original = model.backup[key].weight if key in model.backup else comfy.utils.get_attr(model.model, key)
        ours = comfy.lora.calculate_weight(model.patches[key], original.to(device, torch.float32, copy=True), key)
        host = comfy.lora.calculate_weight(reference.patches[key], original.to(device, torch.float32, copy=True), key)
        host_change = host - original.to(device, torch.float32)
        worst = max(worst, ((ours - host).norm() / host_change.norm()).item())
    return worst


# ----------------------------------------------------------------------------------------- per forward


def run_per_forward(args) -> dict:
    pack, stubbed = boot(args.device, args.loras, args.stub, args.threads)
    import comfy.utils

    base = build_model(args.arch, args.device)
    names = lora_names(args.arch, max(args.forward_n))
    bandwidth = copy_bandwidth(args.device)
    rows = []
    weights = None
    for n in args.forward_n:
        ours = Ours(pack, base).patched(names[:n], STRENGTHS[:n])
        host = Host(pack, base).patched(names[:n], STRENGTHS[:n])
        if weights is None:
            weights = {k: comfy.utils.get_attr(base.model, k).detach().to(base.load_device) for k in ours.patches}
        ours_s = min(time_patches(ours.patches, weights, args.device) for _ in range(args.forward_repeats))
        host_s = min(time_patches(host.patches, weights, args.device) for _ in range(args.forward_repeats))
        floor_s = min(time_floor(weights, n * RANK, args.device, pack.loader.fuse.add_product_)
                      for _ in range(args.forward_repeats))
        elements = sum(w.numel() for w in weights.values())
        moved = elements * 2 * weights[next(iter(weights))].element_size()  # each weight read and written once
        rows.append({"n": n, "ours_s": ours_s, "host_s": host_s, "floor_s": floor_s, "elements": elements,
                     "bytes": moved, "gflop": 2 * elements * n * RANK / 1e9})
        del ours, host
    return {"bandwidth": bandwidth, "rows": rows, "stubbed": stubbed, "keys": len(weights or {}),
            "dtype": str(next(iter(weights.values())).dtype) if weights else ""}


# -------------------------------------------------------------------------------------------- parent


def child(args, mode: str, **extra) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--device", args.device, "--arch", args.arch,
               "--loras", args.loras, "--forward-n", ",".join(map(str, args.forward_n)),
               "--forward-repeats", str(args.forward_repeats), "--threads", str(args.threads)]
    if args.stub:
        command += ["--stub", ",".join(args.stub)]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"benchmark child {mode} {extra} failed (exit {done.returncode})")
    return json.loads(lines[-1])


def main_tables(args, runs: list[dict]) -> list[str]:
    lines = ["| N | host ready s | ours ready s | ratio | host strength-change s | ours | ratio | "
             "host peak RSS GiB | ours | ratio | CPU-seconds ratio ready / change | ours − host (relative) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for n in args.n:
        best = {}
        for variant in ("host", "ours"):
            mine = [r for r in runs if r["n"] == n and r["variant"] == variant]
            # Times: the best run (contention only ever adds). Memory: the median run (allocator noise both ways).
            times = ("ready_s", "change_s", "ready_cpu", "change_cpu")
            best[variant] = {key: min(r[key] for r in mine) for key in times}
            best[variant]["peak_rss"] = statistics.median(r["peak_rss"] for r in mine)
            best[variant]["error"] = max((r.get("max_rel_error", 0.0) for r in mine), default=0.0)
        h, o = best["host"], best["ours"]
        ready, change, rss = o["ready_s"] / h["ready_s"], o["change_s"] / h["change_s"], o["peak_rss"] / h["peak_rss"]
        cpu = f"{o['ready_cpu'] / h['ready_cpu']:.2f}× / {o['change_cpu'] / h['change_cpu']:.2f}×"
        lines.append(f"| {n} | {h['ready_s']:.2f} | {o['ready_s']:.2f} | **{ready:.2f}×** | {h['change_s']:.2f} | "
                     f"{o['change_s']:.2f} | **{change:.2f}×** | {gib(h['peak_rss'])} | {gib(o['peak_rss'])} | "
                     f"**{rss:.2f}×** | {cpu} | {o['error']:.1e} |")
        if n == 8:
            verdicts.append(f"N = 8: sampler-ready {ready:.2f}× (target ≤ 0.5), strength change {change:.2f}× "
                            f"(≤ 0.5), peak RSS {rss:.2f}× (≤ 1.0), max relative error {o['error']:.1e} (≤ 1e-5).")
    return [*lines, "", *verdicts]


def environment(args, load_before, load_after) -> list[str]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = cpu
    if args.device == "cuda":
        device = torch.cuda.get_device_name(0)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [f"- Machine: {device}; {os.cpu_count()} CPU cores ({cpu}); {ram:.0f} GiB RAM; torch {torch.__version__}, "
            f"{args.threads or torch.get_num_threads()} torch threads per process; Python {platform.python_version()}.",
            f"- Model: full-size {ARCHS[args.arch]}-structured UNet (model_channels 320), random weights, in the "
            "dtype the host picks for this device; LoRAs: kohya files, rank 32, fp16, alpha 16, every transformer "
            "Linear / 1×1 conv (what kohya's standard LoRA trains) plus the text encoder's modules; the UNet is "
            "patched (no CLIP connected, as in a model-only chain); files in the OS page cache.",
            f"- Load average (1 min) before / after: {load_before:.2f} / {load_after:.2f} "
            "(other work shared the machine; runs alternate ours/host; times: best run, peak RSS: median run)."]


def parent(args) -> None:
    Path(args.loras).mkdir(parents=True, exist_ok=True)
    boot(args.device, args.loras, args.stub)
    names = write_loras(args.arch, max([*args.n, *args.forward_n]), Path(args.loras))
    print(f"{len(names)} LoRA files in {args.loras}", flush=True)
    load_before = os.getloadavg()[0]
    runs = []
    for n in args.n:
        for repeat in range(args.repeats_for.get(n, args.repeats)):
            order = ("ours", "host") if repeat % 2 == 0 else ("host", "ours")
            for variant in order:
                result = child(args, "variant", variant=variant, n=n)
                runs.append(result)
                print(f"  N={n:2d} {variant:4s} ready {result['ready_s']:7.2f} s ({result['ready_cpu']:6.2f} CPU s)  "
                      f"change {result['change_s']:7.2f} s ({result['change_cpu']:6.2f} CPU s)  "
                      f"peak RSS {gib(result['peak_rss'])} GiB  patches/key {result['patches_per_key']}", flush=True)
    forward = child(args, "forward") if args.forward_n else None
    load_after = os.getloadavg()[0]
    stubbed = sorted({s for r in runs for s in r.get("stubbed", [])})
    lines = [f"### {ARCHS[args.arch]} UNet on {args.device.upper()} — LoRA Deck (LoraDeckApply) vs a chain of "
             "core LoraLoader nodes", "", *environment(args, load_before, load_after)]
    if stubbed:
        lines.append(f"- Host imports not installed on this machine and stood in for (never exercised): "
                     f"{', '.join(stubbed)}.")
    lines += ["", "Time to a sampler-ready model (nodes + `load_models_gpu`), after changing one strength, and peak "
              "RSS; ratio = ours / host (lower is better):", "", *main_tables(args, runs)]
    if forward:
        lines += ["", "Per-forward cost of the patched weights (lowvram / dynamic VRAM recompute them every step):", "",
                  *forward_table(forward)]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.markdown:
        write_markdown(Path(args.markdown), args, text, runs, forward)


def write_markdown(path: Path, args, text: str, runs, forward) -> None:
    marker = f"<!-- bench:{args.device}:{args.arch} -->"
    section = f"{marker}\n{text}<!-- raw: {json.dumps({'runs': runs, 'forward': forward})} -->\n{marker}\n"
    existing = path.read_text() if path.exists() else BENCH_DOC_HEADER
    if marker in existing:
        before, _, rest = existing.partition(marker)
        _, _, after = rest.partition(marker)
        existing = before + section.rstrip("\n") + after
    else:
        existing = existing.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(existing)
    temp.replace(path)
    print(f"written to {path}")


BENCH_DOC_HEADER = """# Benchmarks

`make bench` (or `.venv/bin/python scripts/bench.py`) regenerates the CPU section below;
`scripts/gpu_bench.sh` the GPU one. What is measured is described at the top of `scripts/bench.py`.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--arch", choices=tuple(ARCHS), default="sd15")
    parser.add_argument("--quick", action="store_true", help="N = 1, 8; one repeat; per-forward N = 1, 4, 8, 16")
    parser.add_argument("--n", default=None, help="stack sizes for the sampler-ready comparison (1,4,8,16)")
    parser.add_argument("--forward-n", default=None, help="stack sizes for the per-forward table "
                        "(1,2,4,6,8,12,16; '' to skip)")
    parser.add_argument("--repeats", type=int, default=None, help="processes per variant and N (2)")
    parser.add_argument("--forward-repeats", type=int, default=None)
    parser.add_argument("--repeats-for", default="", help="per-N repeats overriding --repeats, e.g. 8:3")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch's default); "
                        "1 gives steadier figures on a shared machine")
    parser.add_argument("--loras", default=os.path.join(tempfile.gettempdir(), "loradeck-bench-loras"))
    parser.add_argument("--markdown", default=None, help="update this markdown file (default for CPU: "
                        "docs/benchmarks.md)")
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument("--stub", default="", help="host imports to stand in for even when installed (testing)")
    parser.add_argument("--child", choices=("variant", "forward"), help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = ("1,8", "1,4,8,16", 1, 1) if args.quick else ("1,4,8,16", "1,2,4,6,8,12,16", 2, 2)
    for name, default in zip(("n", "forward_n", "repeats", "forward_repeats"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.n = [int(x) for x in str(args.n).split(",") if x]
    args.forward_n = [int(x) for x in str(args.forward_n).split(",") if x]
    args.repeats_for = {int(n): int(r) for n, r in (pair.split(":") for pair in args.repeats_for.split(",") if pair)}
    args.stub = [s for s in args.stub.split(",") if s] if isinstance(args.stub, str) else args.stub
    if args.markdown is None and not args.no_markdown and args.device == "cpu" and not args.child:
        args.markdown = str(REPO / "docs" / "benchmarks.md")
    if args.no_markdown:
        args.markdown = None
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child == "variant":
        args.n = args.n[0]
        print(json.dumps(run_variant(args)))
    elif args.child == "forward":
        print(json.dumps(run_per_forward(args)))
    else:
        parent(args)


if __name__ == "__main__":
    main()
