"""DoRA, a modifier of any weight-change type: the merged weight rescaled to a stored magnitude.

Its tensors ride along in a module of another type (LoRA, LoHa, LoKr, GLoRA), so it names no type itself.
"""

from __future__ import annotations

import torch

_EPS = torch.finfo(torch.float32).eps

SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_magnitude_vector", "magnitude"),
    (".magnitude", "magnitude"),  # ai-toolkit's PEFT-convention DoRA
    (".dora_scale", "dora_scale"),
)
ROLES = ("dora_scale", "magnitude")


def is_dora(parts) -> bool:
    return any(role in parts for role in ROLES)


def decompose(merged: torch.Tensor, dora_scale: torch.Tensor | None, magnitude: torch.Tensor | None) -> torch.Tensor:
    """The merged weight W+ΔW rescaled to the stored magnitude, normalised by ‖W+ΔW‖ as the producers do."""
    if magnitude is not None:  # PEFT: always per output channel, [out] or conv [1, out, 1, 1]
        return _rescale_rows(merged, magnitude)
    if dora_scale.shape[0] == merged.shape[0]:  # LyCORIS wd_on_output: [out, 1(, 1, 1)]
        return _rescale_rows(merged, dora_scale)
    return _rescale_columns(merged, dora_scale)  # LyCORIS ≤ 2.x: per input channel, [1, in(, 1, 1)]


def _rescale_rows(merged: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    shape = (merged.shape[0],) + (1,) * (merged.dim() - 1)
    norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(shape) + _EPS
    return magnitude.to(torch.float32).reshape(shape) * merged / norm


def _rescale_columns(merged: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    shape = (1, merged.shape[1]) + (1,) * (merged.dim() - 2)
    norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1).reshape(shape) + _EPS
    return magnitude.to(torch.float32).reshape(shape) * merged / norm
