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
import importlib.abc
import importlib.machinery
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

RANK = 32
ALPHA = 16.0
STRENGTHS = [0.9, -0.6, 0.75, 0.5, -0.8, 1.1, 0.3, -0.4, 0.65, 0.55, -0.7, 0.85, 0.45, -0.35, 0.6, 0.95]
STRENGTH_STEP = 0.25
ARCHS = {"sd15": "SD15", "sdxl": "SDXL"}
# Host imports that the benchmark never exercises (tokenizers, image/video I/O, samplers): when a bare
# machine lacks them they are replaced by inert stand-ins so the host's modules import.
STUBBABLE = ("transformers", "tokenizers", "PIL", "av", "scipy", "torchsde", "trampoline", "torchvision",
             "huggingface_hub", "regex", "sentencepiece", "einops", "tqdm", "yaml", "aiohttp", "spandrel",
             "kornia", "comfy_aimdo")


# ---------------------------------------------------------------------------------------------------- host


class _Inert(type):
    """A class that is also every attribute of itself: subclassable, callable, comparable; does nothing."""

    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return cls

    def __call__(cls, *args, **kwargs):
        return cls

    def __iter__(cls):
        return iter(())

    def __bool__(cls):
        return False

    def __or__(cls, other):
        return cls

    __ror__ = __or__


class _InertModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Inert(name, (), {})


class _InertFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _InertModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0"
        return module

    def exec_module(self, module):
        pass


def stub_missing(forced: list[str]) -> list[str]:
    """Inert stand-ins for the unexercised host imports this Python lacks (or that are forced); returns them."""
    import importlib.util

    missing = [n for n in STUBBABLE if n in forced or importlib.util.find_spec(n) is None]
    if missing:
        finder = _InertFinder(missing)
        sys.meta_path.insert(0, finder) if forced else sys.meta_path.append(finder)
    return missing


def boot(device: str, loras_dir: str, forced_stubs: list[str], threads: int = 0):
    stubbed = stub_missing(forced_stubs)
    import hosting
    import torch

    if threads:
        torch.set_num_threads(threads)

    pack = hosting.boot(loras_dir, builtin_nodes=False, cpu=(device == "cpu"))
    return pack, stubbed


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def build_model(arch: str, device: str, meta: bool = False):
    """A ModelPatcher around a full-size UNet of the host's class for `arch`, filled from a seeded generator."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    import hosting
    import torch

    config = dict({"sd15": hosting.SD15_UNET, "sdxl": hosting.SDXL_UNET}[arch])
    config.update(model_channels=320, image_size=64)
    if arch == "sd15":
        config.update(context_dim=768)
    model_config = getattr(comfy.supported_models, ARCHS[arch])(config)
    if meta:
        model_config.set_inference_dtype(torch.float32, None)
        return model_config.get_model({}, device=torch.device("meta"))
    load_device = comfy.model_management.get_torch_device()
    dtype = comfy.model_management.unet_dtype(load_device, model_params=10**9,
                                              supported_dtypes=model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, comfy.model_management.unet_manual_cast(dtype, load_device))
    model = model_config.get_model({})
    # Values from one seeded pool, tiled: random enough for timing, and filling a 2.6B-parameter SDXL UNet
    # costs memory copies instead of minutes of single-threaded sampling.
    pool = torch.randn(1 << 22, generator=torch.Generator().manual_seed(0)) * 0.02
    offset = 0
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                flat = tensor.view(-1)
                for start in range(0, flat.numel(), pool.numel()):
                    chunk = flat[start: start + pool.numel()]
                    shift = offset % (pool.numel() - chunk.numel() + 1)
                    chunk.copy_(pool[shift: shift + chunk.numel()])
                    offset += 7919
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                            offload_device=comfy.model_management.unet_offload_device())


def kohya_modules(model) -> dict[str, tuple[str, tuple[int, ...]]]:
    """kohya module name -> (model key, weight shape) for what kohya's standard LoRA trains: every Linear and
    1×1 conv of the transformer blocks (attention, feed-forward, proj_in/out)."""
    import comfy.lora

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    out = {}
    for lora_key, model_key in comfy.lora.model_lora_keys_unet(model, {}).items():
        if not (isinstance(model_key, str) and lora_key.startswith("lora_unet_") and "_attentions_" in lora_key):
            continue
        shape = shapes[model_key]
        if len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1)):
            out[lora_key] = (model_key, shape)
    return out


# Text encoders as kohya names them: (prefix, layers, hidden width, MLP width). Files carry their modules
# as kohya writes them; the benchmark patches the UNet only (no CLIP connected), as a model-only chain does.
TEXT_ENCODERS = {"sd15": [("lora_te", 12, 768, 3072)],
                 "sdxl": [("lora_te1", 12, 768, 3072), ("lora_te2", 32, 1280, 5120)]}


def text_encoder_modules(arch: str) -> dict[str, tuple[int, int]]:
    modules = {}
    for prefix, layers, hidden, mlp in TEXT_ENCODERS[arch]:
        for layer in range(layers):
            stem = f"{prefix}_text_model_encoder_layers_{layer}_"
            for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
                modules[f"{stem}self_attn_{projection}"] = (hidden, hidden)
            modules[f"{stem}mlp_fc1"] = (mlp, hidden)
            modules[f"{stem}mlp_fc2"] = (hidden, mlp)
    return modules


def lora_names(arch: str, count: int | None = None) -> list[str]:
    return [f"bench_{arch}_r{RANK}_te_{i:02d}.safetensors" for i in range(16 if count is None else count)]


def write_loras(arch: str, count: int, folder: Path) -> list[str]:
    """`count` kohya files of rank 32 from random factors (fp16, alpha 16), written once per folder."""
    import torch
    from safetensors.torch import save_file

    names = lora_names(arch, count)
    if all((folder / n).exists() for n in names):
        return names
    shapes = {key: shape for key, (_, shape) in kohya_modules(build_model(arch, "cpu", meta=True)).items()}
    shapes.update(text_encoder_modules(arch))
    for i, name in enumerate(names):
        if (folder / name).exists():
            continue
        generator = torch.Generator().manual_seed(1000 + i)
        tensors = {}
        for lora_key, shape in shapes.items():
            out_features, in_features = shape[0], shape[1]
            extra = (1, 1) if len(shape) == 4 else ()
            down = torch.randn(RANK, in_features, *extra, generator=generator) / in_features**0.5
            up = torch.randn(out_features, RANK, *extra, generator=generator) * 0.01
            tensors[f"{lora_key}.lora_down.weight"] = down.to(torch.float16)
            tensors[f"{lora_key}.lora_up.weight"] = up.to(torch.float16)
            tensors[f"{lora_key}.alpha"] = torch.tensor(ALPHA, dtype=torch.float16)
        temp = folder / f".{name}.tmp"
        save_file(tensors, str(temp), metadata={"ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA)})
        temp.replace(folder / name)
    return names


# ---------------------------------------------------------------------------------------------- variants


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system): what the work cost, whatever else ran."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


def copy_bandwidth(device: str, megabytes: int = 512) -> float:
    """Bytes per second read + written by a large tensor copy (best of 5)."""
    import torch

    source = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device).normal_()
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        target.copy_(source)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best


def time_patches(patches: dict, weights: dict, device: str) -> float:
    """Seconds to compute every patched weight once, as a lowvram / dynamic-VRAM forward does."""
    import comfy.lora

    total = 0.0
    for key, patch_list in patches.items():
        weight = weights[key].clone()
        sync(device)
        start = time.perf_counter()
        comfy.lora.calculate_weight(patch_list, weight, key, intermediate_dtype=weight.dtype)
        sync(device)
        total += time.perf_counter() - start
    return total


def time_floor(weights: dict, rank: int, device: str, add_product_) -> float:
    """Seconds for one bare rank-`rank` fp32 product added into each patched weight's shape (the fused patch's
    own product kernel, without the factor stacking), into a warmed buffer: no page faults while timing."""
    import torch

    largest = max(w.numel() for w in weights.values())
    space = torch.zeros(largest, dtype=torch.float32, device=device)
    total = 0.0
    for weight in weights.values():
        out_features, n = weight.shape[0], weight.numel() // weight.shape[0]
        up = torch.randn(out_features, rank, device=device)
        down = torch.randn(rank, n, device=device)
        result = space[: out_features * n].view(out_features, n)
        sync(device)
        start = time.perf_counter()
        add_product_(result, up, down)
        sync(device)
        total += time.perf_counter() - start
    return total


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


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


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


def forward_table(result: dict) -> list[str]:
    bandwidth = result["bandwidth"]
    lines = [f"Copy bandwidth measured: {bandwidth / 1e9:.1f} GB/s. {result['keys']} patched weights "
             f"({result['dtype']}); per-forward = all of them computed once with the host's calculate_weight.", "",
             "| N | rank N·r | host s | ours (fused) s | ours / host | floor: one rank-N·r matmul s | "
             "ours / floor | fused GFLOP/s | fused bytes ÷ time, share of copy bandwidth |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        share = row["bytes"] / row["ours_s"] / bandwidth
        lines.append(f"| {row['n']} | {row['n'] * RANK} | {row['host_s']:.3f} | {row['ours_s']:.3f} | "
                     f"{row['ours_s'] / row['host_s']:.2f} | {row['floor_s']:.3f} | "
                     f"{row['ours_s'] / row['floor_s']:.2f} | {row['gflop'] / row['ours_s']:.0f} | {share:.0%} |")
    return lines


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
