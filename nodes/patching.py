"""A stack of LoRAs registered on clones of the host's MODEL and CLIP as the host's own weight patches.

Key maps come from the live model (`comfy.lora.model_lora_keys_*`), so every architecture the host knows
is covered. The whole stack becomes one patch per weight: a `FusedStackPatch` (a host weight adapter)
holding every entry's contribution to that weight, computed when the host patches the weight as one
matrix product over the stacked low-rank factors, in the host's intermediate dtype and in place
(`loader.fuse`); other adapter types are applied by themselves in stack order. Model weights are never
written here, so lowvram, dynamic VRAM, hooks and unpatching keep working.
"""

from __future__ import annotations

import logging

import comfy.lora
import torch
from comfy.weight_adapter.base import WeightAdapterBase

from ..loader import cache, files, fuse, spec
from ..loader.blocks import BlockMap
from ..loader.plan import Contribution, LoraApplyError, LoraReport, ModelFacts, plan_entry, report_text
from ..loader.shapes import weight_shapes
from ..loader.stack import StackEntry
from . import block_presets, folders

__all__ = ["LoraApplyError", "LoraReport", "apply_stack", "report_text"]

log = logging.getLogger("loradeck")

# The host's model classes, by the base-architecture names the loader detects from a LoRA file.
HOST_FAMILIES = {
    "sd1": ("SD15", "SD15_instructpix2pix"),
    "sd2": ("SD20", "SD21UnclipL", "SD21UnclipH", "SD20_instructpix2pix"),
    "sdxl": ("SDXL", "SDXLRefiner", "SSD1B", "Segmind_Vega", "KOALA_700M", "KOALA_1B", "SDXL_instructpix2pix"),
    "sd3": ("SD3",),
    "flux": ("Flux", "FluxSchnell", "FluxInpaint", "Chroma"),
    "chroma": ("Chroma", "Flux", "FluxSchnell"),
}


class FusedStackPatch(WeightAdapterBase):
    """Every stack entry's change to one weight, as one host patch (registered with strength 1.0).

    `weights` is `[uses_key_function, *fuse.pack(terms)]`: only tensors, numbers, strings and adapter
    objects, so a host that moves patch data between devices and rebuilds the patch as
    `type(patch)(loaded_keys, weights)` keeps it working.
    """

    name = "loradeck_stack"

    def __init__(self, loaded_keys: set[str], weights: list):
        self.loaded_keys = loaded_keys
        self.weights = weights

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        uses_key_function, *packed = self.weights
        # The host hands an identity lambda when the key has no transform; skipping it keeps the update in place.
        # intermediate_dtype: fp32 when the host patches once (0.3.75), its compute dtype or the weight's own
        # fp16/bf16 when it patches per forward (LowVramPatch) or on newer hosts' GPUs.
        widened = fuse.widened_shape(packed)
        if widened is not None and tuple(weight.shape) != widened:
            # A control LoRA's img_in: the host's own zero-padding (its reshape_weight); the host's patcher then
            # holds the wider weight, and its Flux model reads the width to concatenate the control latent.
            weight = comfy.lora.pad_tensor_to_shape(weight, list(widened))
        return fuse.apply_packed(weight, packed, strength, function if uses_key_function else None,
                                 intermediate_dtype)


class StackPatches:
    """Every entry's contributions, gathered per (target, host key) in stack order; one fused patch per weight."""

    def __init__(self):
        self._terms: dict[tuple[str, object], list[tuple[str, fuse.Term]]] = {}

    def add(self, contribution: Contribution) -> None:
        self._terms.setdefault((contribution.target, contribution.host_key), []).append(
            (contribution.module_key, fuse.Term(contribution.adapter, contribution.coefficient)))

    def by_target(self) -> dict[str, dict]:
        """{"model": {host key: FusedStackPatch}, "clip": {…}}: the host's patch dicts (also hooks' weights)."""
        by_target: dict[str, dict] = {"model": {}, "clip": {}}
        for (target, host_key), contributions in self._terms.items():
            uses_key_function = isinstance(host_key, tuple) and len(host_key) > 2
            weights = [uses_key_function, *fuse.pack([term for _, term in contributions])]
            by_target[target][host_key] = FusedStackPatch({key for key, _ in contributions}, weights)
        return by_target

    def register(self, model, clip) -> dict[str, set]:
        """add_patches once per patcher; returns the host keys each target accepted."""
        by_target = self.by_target()
        accepted = {"model": set(), "clip": set()}
        for target, patcher in (("model", model), ("clip", clip)):
            if by_target[target] and patcher is not None:
                accepted[target] = set(patcher.add_patches(by_target[target], 1.0))
        return accepted


def architecture_of(model) -> str:
    return type(model.model.model_config).__name__


def _mismatch_note(base: str | None, architecture: str | None) -> str:
    if base is None or architecture is None or base not in HOST_FAMILIES:
        return ""
    if architecture in HOST_FAMILIES[base]:
        return ""
    return f"this is a {base.upper()} LoRA but the model is {architecture}"


def apply_stack(model, clip, entries: list[StackEntry], skip_unloadable: bool = False,
                split_qkv_scale: str = "auto") -> tuple[object, object, list[LoraReport]]:
    """Clones of model and clip with every entry's patches added, and a report per entry.

    A LoRA that cannot be loaded (unreadable file, unknown layout, nothing matching this model) stops the
    workflow with a message naming it, or with `skip_unloadable` is left out and reported.
    `split_qkv_scale`: how kohya Flux split_qkv modules are scaled (loader/split_qkv.py).
    """
    new_model = model.clone() if model is not None else None
    new_clip = clip.clone() if clip is not None else None
    planned = plan_stack(model, clip, entries, skip_unloadable, split_qkv_scale)
    accepted = planned.groups[None].register(new_model, new_clip) if None in planned.groups else {
        "model": set(), "clip": set()}
    for report, keys in zip(planned.reports, planned.contributed, strict=True):
        report.model_keys = len(keys["model"] & accepted["model"])
        report.clip_keys = len(keys["clip"] & accepted["clip"])
    for metadata in planned.metadata:
        attach_metadata(metadata, new_model, new_clip)
    return new_model, new_clip, planned.reports


class PlannedStack:
    """A stack's contributions in groups (`group_of(entry, contribution)`; one group, None, by default),
    with a report, the host keys contributed per target, and the file metadata of each loaded entry."""

    def __init__(self):
        self.groups: dict[object, StackPatches] = {}
        self.reports: list[LoraReport] = []
        self.contributed: list[dict[str, set]] = []
        self.metadata: list[dict[str, str]] = []


def plan_stack(model, clip, entries: list[StackEntry], skip_unloadable: bool = False,
               split_qkv_scale: str = "auto", group_of=None) -> PlannedStack:
    """Every entry planned against the live model and text encoder (their key maps and block table)."""
    architecture = architecture_of(model) if model is not None else None
    shapes = shapes_of(model, clip)
    facts = ModelFacts(
        unet_map=comfy.lora.model_lora_keys_unet(model.model, {}) if model is not None else {},
        clip_map=comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {}) if clip is not None else {},
        shapes=shapes,
        has_clip=clip is not None,
        mismatch_note=lambda base: _mismatch_note(base, architecture),
    )
    block_map = block_map_of(model, clip, shapes)
    planned = PlannedStack()
    for entry in entries:
        try:
            weights = spec.parse(entry.blocks, block_map, presets=block_presets.user_presets())
        except spec.SpecError as e:
            raise LoraApplyError(f"{entry.lora_name}: block weights: {e}") from None
        try:
            loaded, report, contributions = _plan(entry, weights, facts, split_qkv_scale)
        except LoraApplyError as e:
            if not skip_unloadable:
                raise
            log.warning("LoRA Deck: skipped %s", e)
            planned.reports.append(LoraReport.skipped(entry, str(e).removeprefix(f"{entry.lora_name}: ")))
            planned.contributed.append({"model": set(), "clip": set()})
            continue
        keys: dict[str, set] = {"model": set(), "clip": set()}
        for contribution in contributions:
            group = group_of(entry, contribution) if group_of is not None else None
            planned.groups.setdefault(group, StackPatches()).add(contribution)
            keys[contribution.target].add(contribution.host_key)
        planned.reports.append(report)
        planned.contributed.append(keys)
        planned.metadata.append(loaded.layout.metadata)
    return planned


def shapes_of(model, clip) -> dict[str, dict[str, tuple[int, ...]]]:
    """Every weight's logical shape, per target ("model", "clip"): what the layer computes with, not what a
    quantized layer stores (GGUF blocks, packed nvfp4)."""
    return {"model": weight_shapes(model.model if model is not None else None),
            "clip": weight_shapes(clip.cond_stage_model if clip is not None else None)}


def block_map_of(model, clip, shapes: dict | None = None) -> BlockMap:
    """The block ids of the live model and text encoder, for block-weight specs."""
    # Shapes, not just keys, let the q/k/v/mlp row slices of fused weights be told apart.
    shapes = shapes or shapes_of(model, clip)
    return BlockMap.from_keys(architecture_of(model) if model is not None else "unknown",
                              shapes["model"], shapes["clip"])


class _PlanProblem(Exception):
    """A problem of the stack entry itself (not of reading its file), carried out of LoraCache.use unchanged."""

    def __init__(self, error: Exception):
        self.error = error


def _plan(entry: StackEntry, weights, facts: ModelFacts, split_qkv_scale: str):
    """(file, report, contributions) of one entry, every tensor from the one version of the file on disk."""
    def plan(loaded):
        problem = loaded.layout.problem()
        if problem:
            raise LoraApplyError(f"{entry.lora_name}: {problem}")
        try:
            return (loaded, *plan_entry(loaded, entry, weights, facts, split_qkv_scale))
        except files.LoraFileError:
            raise  # FileChangedError: read again from the header by LoraCache.use
        except ValueError as e:
            raise _PlanProblem(e) from e

    try:
        return cache.shared_cache.use(folders.resolve(entry.lora_name), plan)
    except _PlanProblem as e:
        raise e.error from None
    except (files.LoraFileError, OSError, ValueError) as e:
        problem = e.problem if isinstance(e, files.LoraFileError) else str(e)
        raise LoraApplyError(f"{entry.lora_name}: {problem}") from None


def attach_metadata(metadata: dict[str, str], *patchers) -> None:
    """As newer hosts' own loader does: the last LoRA's metadata rides on the patchers (LTXV IC-LoRA reads it)."""
    for patcher in patchers:
        target = getattr(patcher, "patcher", patcher)  # a CLIP holds its ModelPatcher
        if target is not None and hasattr(target, "set_attachments"):
            target.set_attachments("lora_metadata", metadata)
