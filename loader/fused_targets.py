"""Modules trained on a fused q/k/v projection, placed on the host's weights through the host's names for the parts.

diffusers' `fuse_qkv_projections()` (and SimpleTuner's `fused_qkv_projections`, its LyCORIS files too) trains
`attn.to_qkv` (the rows of to_q, to_k, to_v stacked in that order) and `attn.to_added_qkv` (add_q_proj, add_k_proj,
add_v_proj). The host's key maps know only the parts: each is a row slice of the host's own fused weight (Flux
`img_attn.qkv`, single blocks' `linear1` rows, SD3 `attn.qkv`) or a weight of its own (Qwen-Image `to_q`, `to_k`,
`to_v`). ComfyUI core (0.3.75 and 0.8.0) loads neither ("lora key not loaded").

So a fused module is placed where the host places its parts: parts that are adjacent rows of one host weight become
one slice (the module as it is); parts on separate weights get the module's rows for each part. Rows of an additive
change are exact to take apart; DoRA normalises per output row (PEFT's magnitude, LyCORIS' wd_on_output), so its rows
are too. A change that depends on the whole fused weight (OFT, GLoRA, IA³, DoRA per input channel) cannot be split
onto separate weights and is refused by name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .adapter_types import LoRA
from .adapter_types.base import Adapter, fro

PARTS = {"to_qkv": ("to_q", "to_k", "to_v"), "to_added_qkv": ("add_q_proj", "add_k_proj", "add_v_proj")}
_FUSED = re.compile(r"^(?P<path>.*[._])(?P<fused>to_qkv|to_added_qkv)$")


class FusedSplitError(ValueError):
    """A fused module whose change cannot be divided onto the model's separate weights."""


@dataclass(frozen=True)
class Part:
    """Where (some of) a fused module's change lands: a host key, and the module's output rows that go there."""

    target: str  # "model" or "clip"
    key: object  # a host key: a model key, or (model key, (dim, start, length)) for a slice of a fused weight
    rows: tuple[int, int, int] | None  # (start, length, all rows) of the module's output rows; None = all of them
    by_parts: bool = True  # placed through its parts' names (False: the host names the module itself)


Lookup = Callable[[str], tuple[str | None, object]]


def part_names(module_key: str) -> list[str]:
    """The module names of a fused module's parts (`…attn.to_q`, `…attn.to_k`, …), or [] for another module."""
    match = _FUSED.match(module_key)
    if not match:
        return []
    return [match["path"] + part for part in PARTS[match["fused"]]]


def place(module_key: str, lookup: Lookup, shapes: dict[str, dict[str, tuple[int, ...]]]) -> list[Part]:
    """Where a fused module lands, by the host keys of its parts ([] when it is not fused or a part is unknown)."""
    found = [lookup(name) for name in part_names(module_key)]
    if not found or any(key is None for _, key in found) or len({target for target, _ in found}) != 1:
        return []
    target = found[0][0]
    slices = [_slice_of(key, shapes[target]) for _, key in found]
    if None in slices:
        return []
    merged = _merged(slices, shapes[target])
    if merged is not None:
        return [Part(target, merged, None)]
    total = sum(length for _, _, length in slices)
    parts, start = [], 0
    for (_, key), (_, _, length) in zip(found, slices, strict=True):
        parts.append(Part(target, key, (start, length, total)))
        start += length
    return parts


def _slice_of(key, shapes: dict[str, tuple[int, ...]]) -> tuple[str, int, int] | None:
    """(model key, first row, row count) that a part's host key patches, None when it cannot be told."""
    if isinstance(key, tuple):
        if len(key) > 2 or key[1] is None or key[1][0] != 0:  # a transformed key, or a slice along another axis
            return None
        return key[0], key[1][1], key[1][2]
    shape = shapes.get(key)
    return (key, 0, shape[0]) if shape else None


def _merged(slices: list[tuple[str, int, int]], shapes: dict[str, tuple[int, ...]]):
    """One host key for parts that are adjacent rows of one weight, in order (the weight itself when they cover
    it); None when they are not."""
    model_key, first, _ = slices[0]
    end = first
    for key, start, length in slices:
        if key != model_key or start != end:
            return None
        end = start + length
    if first == 0 and shapes.get(model_key, (None,))[0] == end:
        return model_key
    return (model_key, (0, first, end - first))


def rows_of(adapter, rows: tuple[int, int, int], shape: tuple[int, ...], module_key: str):
    """The adapter whose change is rows [start, start + length) of `adapter`'s (its bias and DoRA magnitude too);
    `shape` is the part's weight shape, which the fused change has but for its row count (the third of `rows`)."""
    start, length, total = rows
    cut = slice(start, start + length)
    if isinstance(adapter, LoRA) and _rows_separable_dora(adapter):
        return dataclasses.replace(
            adapter, up=adapter.up[cut], bias=_cut(adapter.bias, cut), magnitude=_cut(adapter.magnitude, cut),
            dora_scale=_cut(adapter.dora_scale, cut))
    if adapter.needs_weight and not _rows_separable_dora(adapter):
        raise FusedSplitError(f"{module_key}: its {adapter.label} change depends on the whole fused q/k/v weight, "
                              "which this model keeps as separate weights")
    return RowSlice(inner=adapter, start=start, length=length, whole=(total, *shape[1:]), bias=_cut(adapter.bias, cut),
                    magnitude=_cut(adapter.magnitude, cut), dora_scale=_cut(adapter.dora_scale, cut))


def _rows_separable_dora(adapter) -> bool:
    """True when the adapter's only dependence on the weight is a DoRA normalised per output row."""
    if adapter.weight_dependent:
        return False
    if adapter.dora_scale is None:
        return True
    return adapter.dora_scale.dim() >= 1 and adapter.dora_scale.shape[0] != 1  # LyCORIS wd_on_output: [out, 1…]


def _cut(tensor: torch.Tensor | None, cut: slice) -> torch.Tensor | None:
    return None if tensor is None else tensor[cut]


@dataclass(frozen=True, eq=False, kw_only=True)
class RowSlice(Adapter):
    """Rows [start, start + length) of another adapter's change (an additive type: LoHa, LoKr, full diff)."""

    inner: Adapter
    start: int
    length: int
    whole: tuple[int, ...]  # the shape of the fused weight the inner adapter was trained on

    kind = "rows"

    @property
    def label(self) -> str:
        return self.inner.label

    def on(self, device: torch.device) -> RowSlice:
        moved = super().on(device)
        inner = self.inner.on(device)
        return moved if inner is self.inner else dataclasses.replace(moved, inner=inner)

    def change(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        # The inner types read only the shape of the weight they change; a meta tensor gives it without memory.
        whole = self.inner.change(torch.empty(self.whole, device="meta"))
        return whole[self.start:self.start + self.length]

    def factor_norm(self) -> float:
        return fro(self.change())
