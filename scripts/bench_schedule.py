"""A 4-LoRA schedule through LoRA Deck against the same schedule from core hook nodes, per sampling step.

    .venv/bin/python scripts/bench_schedule.py                  # CPU, full-size SD1.5-structured UNet
    .venv/bin/python scripts/bench_schedule.py --device cuda --latent 64 --steps 20

What is measured: the host's own KSampler (`comfy.sample.sample`, euler, normal, cfg 5) on one latent, with
four kohya LoRAs of rank 32 (scripts/bench.py's files) scheduled as the README's example: 0–40 %, 60–100 %
ramped in over 5 keyframes, 20–80 %, from 50 %. Ours: LoraDeckStack rows with schedules → LoraDeckApplyScheduled
(fused patches in hooks). Core: CreateHookLora + CreateHookKeyframe(s) + SetHookKeyframes + CombineHooks +
ConditioningSetProperties on both conditionings. Per-step cost = sampling time / steps, best of `--repeats`,
alternated (ours, core, ours, core …) in one process; the ratio is ours / core. The unscheduled path is the
same 4 LoRAs without schedules through LoraDeckApply (plain patches), for reference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_models as bench

COUNT = 4
STRENGTHS = [0.9, -0.6, 0.75, 0.5]
SCHEDULES = [{"start": 0.0, "stop": 0.4},
             {"start": 0.6, "stop": 1.0, "from": 0.0, "to": 1.0, "curve": "linear", "keyframes": 5},
             {"start": 0.2, "stop": 0.8},
             {"start": 0.5}]


def core_hooks(names):
    from comfy_extras import nodes_hooks

    def keyframe(strength, percent, previous=None):
        return nodes_hooks.CreateHookKeyframe().create_hook_keyframe(strength, percent, previous)[0]

    def hook(name, strength, keyframes):
        (hooks,) = nodes_hooks.CreateHookLora().create_hook(name, strength, 0.0)
        return nodes_hooks.SetHookKeyframes().set_hook_keyframes(hooks, keyframes)[0]

    ramp = nodes_hooks.CreateHookKeyframesInterpolated().create_hook_keyframes(
        0.0, 1.0, "linear", 0.6, 0.6 + 0.4 * 4 / 5, 5, prev_hook_kf=keyframe(0.0, 0.0))[0]
    groups = [hook(names[0], STRENGTHS[0], keyframe(0.0, 0.4, keyframe(1.0, 0.0))),
              hook(names[1], STRENGTHS[1], ramp),
              hook(names[2], STRENGTHS[2], keyframe(0.0, 0.8, keyframe(1.0, 0.2, keyframe(0.0, 0.0)))),
              hook(names[3], STRENGTHS[3], keyframe(1.0, 0.5, keyframe(0.0, 0.0)))]
    return nodes_hooks.CombineHooksFour().combine_hooks(*groups)[0]


def conditioning(device):
    import torch

    generator = torch.Generator().manual_seed(3)
    return ([[torch.randn(1, 77, 768, generator=generator).to(device), {}]],
            [[torch.randn(1, 77, 768, generator=generator).to(device), {}]])


def sample_seconds(model, positive, negative, steps: int, latent: int, device: str) -> float:
    import comfy.sample
    import torch

    noise = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(11))
    bench.sync(device)
    start = time.perf_counter()
    comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", positive, negative, torch.zeros_like(noise),
                        disable_pbar=True, seed=11)
    bench.sync(device)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--latent", type=int, default=16, help="latent width and height (64 = 512 px)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--loras", default=os.path.join(tempfile.gettempdir(), "loradeck-bench-loras"))
    args = parser.parse_args(argv)
    folder = Path(args.loras)
    folder.mkdir(parents=True, exist_ok=True)
    bench.boot(args.device, str(folder), [], args.threads)
    import nodes

    names = bench.write_loras("sd15", COUNT, folder)
    base = bench.build_model("sd15", args.device)
    positive, negative = conditioning(base.load_device)
    rows = [{"on": True, "lora": n, "strength": s, "schedule": sch}
            for n, s, sch in zip(names, STRENGTHS, SCHEDULES, strict=True)]
    stack_node = nodes.NODE_CLASS_MAPPINGS["LoraDeckStack"]
    scheduled = nodes.NODE_CLASS_MAPPINGS["LoraDeckApplyScheduled"]
    plain_rows = [{k: v for k, v in row.items() if k != "schedule"} for row in rows]
    plain = nodes.NODE_CLASS_MAPPINGS["LoraDeckApply"].execute(
        model=base, lora_stack=stack_node.execute(rows=plain_rows).args[0]).args[0]
    hooks = core_hooks(names)
    from comfy_extras import nodes_hooks

    set_props = nodes_hooks.ConditioningSetProperties()

    def ours():
        out = scheduled.execute(model=base, lora_stack=stack_node.execute(rows=rows).args[0],
                                positive=positive, negative=negative).args
        model, pos, neg = out[0], out[2], out[3]  # by position: outputs are only appended
        return sample_seconds(model, pos, neg, args.steps, args.latent, args.device)

    def core():
        pos = set_props.set_properties(positive, 1.0, "default", hooks=hooks)[0]
        neg = set_props.set_properties(negative, 1.0, "default", hooks=hooks)[0]
        return sample_seconds(base, pos, neg, args.steps, args.latent, args.device)

    times = {"ours": [], "core": [], "plain": []}
    for _ in range(args.repeats):
        times["ours"].append(ours())
        times["core"].append(core())
        times["plain"].append(sample_seconds(plain, positive, negative, args.steps, args.latent, args.device))
    per_step = {k: min(v) / args.steps for k, v in times.items()}
    print(f"| SD1.5 UNet, {COUNT} scheduled LoRAs of rank {bench.RANK}, {args.steps} steps, latent {args.latent}², "
          f"{args.device} | per step |")
    print("|---|---:|")
    print(f"| LoRA Deck (LoraDeckApplyScheduled, fused patches in hooks) | {per_step['ours'] * 1000:.0f} ms |")
    print(f"| core hook nodes (CreateHookLora + keyframes + ConditioningSetProperties) | "
          f"{per_step['core'] * 1000:.0f} ms |")
    print(f"| ratio LoRA Deck / core | {per_step['ours'] / per_step['core']:.3f}× |")
    print(f"| unscheduled: LoraDeckApply, the same 4 LoRAs always on (plain patches) | "
          f"{per_step['plain'] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
