"""Comparing patched weights: ours against the host's, or against a producer's own deltas."""

from __future__ import annotations

import torch


def changed(patcher) -> dict[str, torch.Tensor]:
    """weight − base for every weight the patcher's patches change, as the host's calculate_weight computes it."""
    import comfy.lora

    base = patcher.model.state_dict()
    out = {}
    for key, patches in patcher.patches.items():
        if patches:
            original = base[key].detach().to(torch.float32)
            out[key] = comfy.lora.calculate_weight(patches, original.clone(), key) - original
    return out


def worst_relative_error(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """max over keys of ‖ours − ref‖ / ‖ref‖; both must change exactly the same keys."""
    assert set(ours) == set(reference), (sorted(set(ours) ^ set(reference)))[:5]
    worst = 0.0
    for key, ref in reference.items():
        denominator = ref.norm().item()
        assert denominator > 0, f"{key}: reference delta is zero"
        worst = max(worst, (ours[key] - ref).norm().item() / denominator)
    return worst
