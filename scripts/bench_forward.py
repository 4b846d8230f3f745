"""The per-forward measurements of scripts/bench.py: what lowvram / dynamic-VRAM mode pays on every step
(every patched weight computed once), the floor of one rank-N·r product per weight, the copy bandwidth, and
the table they make."""

from __future__ import annotations

import time

from bench_models import RANK, sync


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
