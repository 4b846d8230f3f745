"""A stack of LoRAs registered on clones of the host's MODEL and CLIP as the host's own weight patches.

Key maps come from the live model (`comfy.lora.model_lora_keys_*`), so every architecture the host knows
is covered. The whole stack becomes one patch per weight: a `FusedStackPatch` (a host weight adapter)
holding every entry's contribution to that weight, computed when the host patches the weight as one
fp32 matrix product over the stacked low-rank factors (`loader.fuse`); other adapter types are applied
by themselves in stack order. Model weights are never written here, so lowvram, dynamic VRAM, hooks and
unpatching keep working.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import comfy.lora
import torch
from comfy.weight_adapter.base import WeightAdapterBase

from ..loader import adapters, cache, energy, files, formats, fuse, spec
from ..loader.blocks import BlockMap
from ..loader.stack import StackEntry
from . import block_presets, folders

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


class LoraApplyError(RuntimeError):
    """A LoRA that cannot be applied to this model; the message names the file and the reason."""


class DeckPatch(WeightAdapterBase):
    """One module's adapter as a host weight patch; the host passes strength × block ratio as `strength`."""

    name = "loradeck"

    def __init__(self, loaded_keys: set[str], weights: list):
        self.loaded_keys = loaded_keys
        self.weights = weights

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        adapter = self.weights[0]
        if function is None:
            function = _identity
        if adapter.linear:
            change = strength * adapter.delta(weight)
        else:
            result = weight.to(torch.float32, copy=True)
            adapter.apply_(result, strength)
            change = result - weight.to(torch.float32)
        weight += function(change).to(weight.dtype)
        return weight


def _identity(x):
    return x


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
        return fuse.apply_packed(weight, packed, strength, function if uses_key_function else None)


class StackPatches:
    """Every entry's contributions, gathered per (target, host key) in stack order; one fused patch per weight."""

    def __init__(self):
        self._terms: dict[tuple[str, object], list[tuple[str, fuse.Term]]] = {}

    def add(self, target: str, host_key, module_key: str, adapter, coefficient: float) -> bool:
        """Record one contribution; False (and nothing recorded) when its coefficient is 0."""
        if coefficient == 0:
            return False
        self._terms.setdefault((target, host_key), []).append((module_key, fuse.Term(adapter, coefficient)))
        return True

    def register(self, model, clip) -> dict[str, set]:
        """add_patches once per patcher; returns the host keys each target accepted."""
        by_target: dict[str, dict] = {"model": {}, "clip": {}}
        for (target, host_key), contributions in self._terms.items():
            uses_key_function = isinstance(host_key, tuple) and len(host_key) > 2
            weights = [uses_key_function, *fuse.pack([term for _, term in contributions])]
            by_target[target][host_key] = FusedStackPatch({key for key, _ in contributions}, weights)
        accepted = {"model": set(), "clip": set()}
        for target, patcher in (("model", model), ("clip", clip)):
            if by_target[target] and patcher is not None:
                accepted[target] = set(patcher.add_patches(by_target[target], 1.0))
        return accepted


@dataclass
class LoraReport:
    name: str
    family: str
    kinds: tuple[str, ...]
    base: str | None
    strength_model: float
    strength_clip: float
    blocks: str
    model_keys: int = 0
    clip_keys: int = 0
    skipped_text_encoder: int = 0
    unmatched: list[str] = field(default_factory=list)
    misfits: list[str] = field(default_factory=list)
    not_understood: int = 0
    note: str = ""
    resolved: str = ""  # how the block spec was read and the table it resolved to (empty without a spec)
    error: str = ""  # set when the LoRA was skipped (skip_unloadable)

    def line(self) -> str:
        if self.error:
            return f"{self.name}: skipped, {self.error}"
        kinds = "+".join(self.kinds) or "no adapters"
        text = (f"{self.name}: {self.family} {kinds}, base {self.base or 'unknown'}; "
                f"model {self.strength_model:g} → {self.model_keys} weights, "
                f"clip {self.strength_clip:g} → {self.clip_keys} weights")
        if self.blocks:
            text += f"; blocks {self.blocks!r}"
        if self.skipped_text_encoder:
            text += f"; {self.skipped_text_encoder} text-encoder modules skipped (no CLIP connected)"
        if self.unmatched:
            examples = ", ".join(self.unmatched[:3])
            text += f"; {len(self.unmatched)} modules matched nothing in this model (e.g. {examples})"
        if self.misfits:
            text += f"; {len(self.misfits)} modules do not fit this model's shapes (skipped)"
        if self.not_understood:
            text += f"; {self.not_understood} tensors in no layout this version understands"
        if self.note:
            text += f"; {self.note}"
        if self.resolved:
            text += "\n  " + self.resolved.replace("\n", "\n  ")
        return text


def architecture_of(model) -> str:
    return type(model.model.model_config).__name__


def _mismatch_note(base: str | None, architecture: str | None) -> str:
    if base is None or architecture is None or base not in HOST_FAMILIES:
        return ""
    if architecture in HOST_FAMILIES[base]:
        return ""
    return f"this is a {base.upper()} LoRA but the model is {architecture}"


def apply_stack(model, clip, entries: list[StackEntry],
                skip_unloadable: bool = False) -> tuple[object, object, list[LoraReport]]:
    """Clones of model and clip with every entry's patches added, and a report per entry.

    A LoRA that cannot be loaded (unreadable file, unknown layout, nothing matching this model) stops the
    workflow with a message naming it, or with `skip_unloadable` is left out and reported.
    """
    new_model = model.clone() if model is not None else None
    new_clip = clip.clone() if clip is not None else None
    unet_map = comfy.lora.model_lora_keys_unet(model.model, {}) if model is not None else {}
    clip_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {}) if clip is not None else {}
    architecture = architecture_of(model) if model is not None else None
    block_map = block_map_of(model, clip)
    shapes = {"model": _shapes(model.model if model is not None else None),
              "clip": _shapes(clip.cond_stage_model if clip is not None else None)}
    reports = []
    patches = StackPatches()
    contributed: list[dict[str, set]] = []
    for entry in entries:
        try:
            weights = spec.parse(entry.blocks, block_map, presets=block_presets.user_presets())
        except spec.SpecError as e:
            raise LoraApplyError(f"{entry.lora_name}: block weights: {e}") from None
        try:
            loaded = _load(entry.lora_name)
            report, keys = _apply_one(loaded, entry, weights, patches, new_clip is not None, unet_map, clip_map,
                                      architecture, shapes)
        except LoraApplyError as e:
            if not skip_unloadable:
                raise
            log.warning("LoRA Deck: skipped %s", e)
            reports.append(LoraReport(entry.lora_name, "", (), None, entry.strength_model, entry.strength_clip,
                                      entry.blocks, error=str(e).removeprefix(f"{entry.lora_name}: ")))
            contributed.append({"model": set(), "clip": set()})
            continue
        reports.append(report)
        contributed.append(keys)
        _attach_metadata(loaded.layout.metadata, new_model, new_clip)
    accepted = patches.register(new_model, new_clip)
    for report, keys in zip(reports, contributed, strict=True):
        report.model_keys = len(keys["model"] & accepted["model"])
        report.clip_keys = len(keys["clip"] & accepted["clip"])
    return new_model, new_clip, reports


def block_map_of(model, clip) -> BlockMap:
    """The block ids of the live model and text encoder, for block-weight specs."""
    return BlockMap.from_keys(
        architecture_of(model) if model is not None else "unknown",
        model.model.state_dict() if model is not None else [],  # shapes let q/k/v/mlp row slices be told apart
        list(clip.cond_stage_model.state_dict()) if clip is not None else [],
    )


def _load(lora_name: str):
    try:
        loaded = cache.shared_cache.load(folders.resolve(lora_name))
    except (files.LoraFileError, OSError, ValueError) as e:
        problem = e.problem if isinstance(e, files.LoraFileError) else str(e)
        raise LoraApplyError(f"{lora_name}: {problem}") from None
    problem = loaded.layout.problem()
    if problem:
        raise LoraApplyError(f"{lora_name}: {problem}")
    return loaded


def _attach_metadata(metadata: dict[str, str], *patchers) -> None:
    """As newer hosts' own loader does: the last LoRA's metadata rides on the patchers (LTXV IC-LoRA reads it)."""
    for patcher in patchers:
        target = getattr(patcher, "patcher", patcher)  # a CLIP holds its ModelPatcher
        if target is not None and hasattr(target, "set_attachments"):
            target.set_attachments("lora_metadata", metadata)


def _apply_one(loaded, entry, weights, patches: StackPatches, has_clip: bool, unet_map, clip_map,
               architecture, shapes) -> tuple[LoraReport, dict[str, set]]:
    """Add one entry's contributions to `patches`; its report, and the host keys it contributed to per target."""
    layout = loaded.layout
    report = LoraReport(entry.lora_name, layout.family, layout.adapter_kinds, layout.base,
                        entry.strength_model, entry.strength_clip, entry.blocks)
    targets: dict[str, tuple[str, object]] = {}
    for module_key, module in layout.modules.items():
        target, host_key = _host_key(module_key, unet_map, clip_map)
        if host_key is not None:
            targets[module_key] = (target, host_key)
        elif module.is_text_encoder and not has_clip:
            report.skipped_text_encoder += 1
        else:
            report.unmatched.append(module_key)
    report.note = _mismatch_note(layout.base, architecture)
    report.not_understood = len(layout.unused)
    if not targets and report.unmatched:
        reason = report.note or (f"none of its {len(layout.modules)} modules ({layout.family} "
                                 f"{'+'.join(layout.adapter_kinds)}) match this model's weights")
        raise LoraApplyError(f"{entry.lora_name}: {reason} (e.g. {report.unmatched[0]!r})")
    strengths = {"model": entry.strength_model, "clip": entry.strength_clip}
    # Only the tensors this model will use are read (every matched module when a block table is reported).
    used = [m for m, (target, _) in targets.items() if strengths[target] != 0 or entry.blocks]
    try:
        loaded_adapters = loaded.adapters_for(used)
    except files.LoraFileError as e:  # NaN/inf data, or tensors its adapter math cannot use
        raise LoraApplyError(f"{entry.lora_name}: {e.problem}") from None
    keys: dict[str, set] = {"model": set(), "clip": set()}

    def contribute(target, host_key, module_key, adapter, coefficient):
        if patches.add(target, host_key, module_key, adapter, coefficient):
            keys[target].add(host_key)

    measured: list[energy.KeyEnergy] = []
    for module_key in used:
        adapter = loaded_adapters[module_key]
        target, host_key = targets[module_key]
        strength = strengths[target]
        model_key, offset = (host_key[0], host_key[1]) if isinstance(host_key, tuple) else (host_key, None)
        misfit = _misfit(adapter, shapes[target].get(model_key), offset)
        if misfit:  # the host would fail mid-sampling; say so now, naming the module
            report.misfits.append(f"{module_key}: {misfit}")
            continue
        if entry.blocks:
            measured.append(energy.KeyEnergy(model_key, offset, *energy.adapter_norm(adapter)))
        splittable = getattr(adapter, "linear", False) and getattr(adapter, "up", None) is not None \
            and getattr(adapter, "mid", None) is None
        slices = weights.row_slices(model_key, offset) if splittable else None
        if slices:  # element rules give the q/k/v/mlp rows of one fused weight different ratios
            first = offset[1] if offset else 0
            bias_key = _bias_key(model_key)
            for (dim, start, length), ratio in slices:
                rows = slice(start - first, start - first + length)
                part = dataclasses.replace(adapter, up=adapter.up[rows], bias=None)
                contribute(target, (model_key, (dim, start, length)), module_key, part, strength * ratio)
                if adapter.bias is not None and bias_key is not None:
                    contribute(target, (bias_key, (dim, start, length)), module_key,
                               adapters.BiasChange(adapter.bias[rows]), strength * ratio)
            continue
        coefficient = strength * weights.ratio(model_key, offset)
        if not isinstance(adapter, adapters.BiasChange):
            contribute(target, host_key, module_key, adapter, coefficient)
        bias = adapter.bias_delta if isinstance(adapter, adapters.BiasChange) else adapter.bias
        bias_key = _bias_key(host_key)
        if bias is not None and bias_key is not None:
            contribute(target, bias_key, module_key, adapters.BiasChange(bias), coefficient)
    if report.misfits and not any(keys.values()):
        raise LoraApplyError(f"{entry.lora_name}: its shapes do not fit this model; is it made for another "
                             f"model? (e.g. {report.misfits[0]})")
    if report.misfits:
        log.warning("LoRA Deck: %s: %d modules do not fit this model's shapes and were skipped (e.g. %s)",
                    entry.lora_name, len(report.misfits), report.misfits[0])
    if entry.blocks:
        report.resolved = "\n".join([weights.summary(), *weights.warnings, energy.table(measured, weights).format()])
    if report.unmatched:
        examples = ", ".join(report.unmatched[:3])
        log.warning("LoRA Deck: %s: %d of %d modules matched nothing in this model (e.g. %s)%s",
                    entry.lora_name, len(report.unmatched), len(layout.modules), examples,
                    f"; {report.note}" if report.note else "")
    elif report.note:
        log.warning("LoRA Deck: %s: %s", entry.lora_name, report.note)
    return report, keys


def _shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()} if module is not None else {}


def _misfit(adapter, shape: tuple[int, ...] | None, offset) -> str:
    """Why the adapter's change cannot land on a weight of this shape ("" when it can).

    The change is computed on the meta device: shapes only, no data and no arithmetic, so every adapter
    type is checked by its own code at no cost before the host would fail on it mid-sampling.
    """
    if shape is None or not hasattr(adapter, "on"):
        return ""
    if offset is not None:  # (dim, start, length): a slice of a fused weight
        dim, _, length = offset
        shape = (*shape[:dim], length, *shape[dim + 1:])
    meta = torch.device("meta")
    try:
        adapter.on(meta).delta(torch.empty(shape, device=meta))
    except NotImplementedError:  # an operation without a meta kernel: the shapes cannot be told in advance
        return ""
    except (RuntimeError, ValueError, IndexError) as e:
        if "meta" in str(e).lower():  # math that needs values (OFT's constraint .item()): cannot be told either
            return ""
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"its change does not fit the model's weight {list(shape)} ({reason})"
    return ""


def _host_key(module_key: str, unet_map: dict, clip_map: dict):
    for candidate in formats.key_candidates(module_key):
        if candidate in unet_map:
            return "model", unet_map[candidate]
        if candidate in clip_map:
            return "clip", clip_map[candidate]
    return None, None


def _bias_key(host_key):
    """The host key of the bias beside a weight key (a tuple key keeps its row slice and function)."""
    key = host_key[0] if isinstance(host_key, tuple) else host_key
    if not key.endswith(".weight"):
        return None
    bias = key[: -len(".weight")] + ".bias"
    return (bias, *host_key[1:]) if isinstance(host_key, tuple) else bias


def report_text(reports: list[LoraReport]) -> str:
    return "\n".join(r.line() for r in reports) or "no LoRAs applied"
