"""Which change each stack entry makes to which model weight: the host-independent half of applying a stack.

Given a LoRA file, its stack entry, the block weights and the live model's key maps (plain dicts from the
host: LoRA module name → model key, or (model key, row slice) for a fused weight), `plan_entry` decides
every contribution — target (model or text encoder), host key, adapter and coefficient (strength × block
ratio) — and writes the entry's report. The host glue only registers the contributions as patches.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import torch

from . import adapter_types, core_differences, energy, files, fused_targets, host_keys, split_qkv
from .cache import LoadedLora
from .spec import BlockWeights
from .stack import StackEntry

log = logging.getLogger("loradeck")


class LoraApplyError(RuntimeError):
    """A LoRA that cannot be applied to this model; the message names the file and the reason."""


@dataclass(frozen=True)
class Contribution:
    target: str  # "model" or "clip"
    host_key: object  # a model key, or a tuple (key, (dim, start, length)[, function]) for a slice
    module_key: str
    adapter: object
    coefficient: float  # strength × block ratio


@dataclass(frozen=True)
class ModelFacts:
    """What planning needs to know of the live model and text encoder."""

    unet_map: dict
    clip_map: dict
    shapes: dict[str, dict[str, tuple[int, ...]]]  # per target: model key → weight shape
    has_clip: bool
    mismatch_note: object = None  # callable(base) -> "" or "this is a … LoRA but the model is …"


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
    differences: list[str] = field(default_factory=list)  # deliberate differences from ComfyUI core
    error: str = ""  # set when the LoRA was skipped (skip_unloadable)
    widened: list[str] = field(default_factory=list)  # control LoRAs: "img_in from [3072, 64] to [3072, 128]"

    @classmethod
    def skipped(cls, entry: StackEntry, error: str) -> LoraReport:
        return cls(entry.lora_name, "", (), None, entry.strength_model, entry.strength_clip, entry.blocks,
                   error=error)

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
        if self.widened:
            text += f"; control LoRA: widened {', '.join(self.widened)}"
        if self.note:
            text += f"; {self.note}"
        for difference in self.differences:
            text += f"\n  unlike ComfyUI core: {difference}"
        if self.resolved:
            text += "\n  " + self.resolved.replace("\n", "\n  ")
        return text


def report_text(reports: list[LoraReport]) -> str:
    return "\n".join(r.line() for r in reports) or "no LoRAs applied"


def host_key(module_key: str, unet_map: dict, clip_map: dict) -> tuple[str | None, object]:
    """(target, host key) of a LoRA module, trying every spelling the host may know it under."""
    for candidate in host_keys.key_candidates(module_key):
        if candidate in unet_map:
            return "model", unet_map[candidate]
        if candidate in clip_map:
            return "clip", clip_map[candidate]
    return None, None


def plan_entry(loaded: LoadedLora, entry: StackEntry, weights: BlockWeights, model: ModelFacts,
               split_qkv_scale: str = "auto") -> tuple[LoraReport, list[Contribution]]:
    """Every contribution of one stack entry, and its report. LoraApplyError when nothing of it can apply.

    `split_qkv_scale` is the convention for kohya Flux split_qkv modules (split_qkv.CONVENTIONS)."""
    layout = loaded.layout
    report = LoraReport(entry.lora_name, layout.family, layout.adapter_kinds, layout.base,
                        entry.strength_model, entry.strength_clip, entry.blocks)
    targets = _match_targets(layout, model, report)
    report.note = model.mismatch_note(layout.base) if model.mismatch_note else ""
    report.not_understood = len(layout.unused)
    if not targets and report.unmatched:
        reason = report.note or (f"none of its {len(layout.modules)} modules ({layout.family} "
                                 f"{'+'.join(layout.adapter_kinds)}) match this model's weights")
        raise LoraApplyError(f"{entry.lora_name}: {reason} (e.g. {report.unmatched[0]!r})")
    strengths = {"model": entry.strength_model, "clip": entry.strength_clip}
    # Only the tensors this model will use are read (every matched module when a block table is reported).
    used = [m for m, parts in targets.items() if strengths[parts[0].target] != 0 or entry.blocks]
    try:
        loaded_adapters = loaded.adapters_for(used)
    except files.FileChangedError:
        raise  # read again from the file's header by the caller (LoraCache.use)
    except files.LoraFileError as e:  # NaN/inf data, or tensors its adapter math cannot use
        raise LoraApplyError(f"{entry.lora_name}: {e.problem}") from None
    contributions: list[Contribution] = []
    measured: list[energy.KeyEnergy] = []
    applied: list[core_differences.Applied] = []
    for module_key in used:
        whole = split_qkv.at_convention(loaded_adapters[module_key], split_qkv_scale)
        for part in targets[module_key]:
            placed = _place(part, module_key, whole, strengths[part.target], weights, model, report,
                            measure=bool(entry.blocks))
            if placed is None:
                continue
            mine, energy_of_key = placed
            contributions += mine
            measured += [energy_of_key] if energy_of_key else []
            applied += _applied(layout.modules[module_key], mine, model.shapes[part.target], part.by_parts)
    if report.misfits and not contributions:
        raise LoraApplyError(f"{entry.lora_name}: its shapes do not fit this model; is it made for another "
                             f"model? (e.g. {report.misfits[0]})")
    report.differences = core_differences.notes(applied)
    if entry.blocks:
        report.resolved = "\n".join([weights.summary(), *weights.warnings, energy.table(measured, weights).format()])
    _log_problems(report, len(layout.modules))
    return report, contributions


def _place(part: fused_targets.Part, module_key: str, whole, strength: float, weights: BlockWeights,
           model: ModelFacts, report: LoraReport, measure: bool):
    """(contributions, energy or None) of one module on one host key, or None for a misfit (told in the report).
    The energy (Block View's ‖ΔW‖) is measured only when `measure`: it can cost as much as the change itself."""
    model_key, offset = (part.key[0], part.key[1]) if isinstance(part.key, tuple) else (part.key, None)
    shape = model.shapes[part.target].get(model_key)
    try:
        adapter = fused_targets.rows_of(whole, part.rows, shape, module_key) if part.rows else whole
    except fused_targets.FusedSplitError as e:
        report.misfits.append(str(e))
        return None
    misfit = _misfit(adapter, shape, offset)
    if misfit:  # the host would fail mid-sampling; say so now, naming the module
        report.misfits.append(f"{module_key}: {misfit}")
        return None
    report.widened += _widening(module_key, adapter, shape)
    mine = [c for c in _contributions(part.target, part.key, module_key, adapter, strength, weights)
            if c.coefficient != 0]
    return mine, energy.KeyEnergy(model_key, offset, *energy.adapter_norm(adapter)) if measure else None


def _match_targets(layout, model: ModelFacts, report: LoraReport) -> dict[str, list[fused_targets.Part]]:
    """module key -> where it lands, for every module the model has; the others are counted in the report.

    A module lands on one host key, or (a fused q/k/v module the host does not name) where the host puts its parts."""
    def lookup(name: str) -> tuple[str | None, object]:
        return host_key(name, model.unet_map, model.clip_map)

    targets: dict[str, list[fused_targets.Part]] = {}
    for module_key, module in layout.modules.items():
        target, key = lookup(module_key)
        parts = [fused_targets.Part(target, key, None, by_parts=False)] if key is not None else \
            fused_targets.place(module_key, lookup, model.shapes)
        if parts:
            targets[module_key] = parts
        elif module.is_text_encoder and not model.has_clip:
            report.skipped_text_encoder += 1
        else:
            report.unmatched.append(module_key)
    return targets


def _contributions(target: str, key, module_key: str, adapter, strength: float,
                   weights: BlockWeights) -> list[Contribution]:
    """One module's contributions: the weight (split by rows when element rules differ inside a fused
    weight) and the bias beside it."""
    model_key, offset = (key[0], key[1]) if isinstance(key, tuple) else (key, None)
    splittable = getattr(adapter, "linear", False) and getattr(adapter, "up", None) is not None \
        and getattr(adapter, "mid", None) is None
    slices = weights.row_slices(model_key, offset) if splittable else None
    out: list[Contribution] = []
    if slices:  # element rules give the q/k/v/mlp rows of one fused weight different ratios
        first = offset[1] if offset else 0
        bias_key = _bias_key(model_key)
        for (dim, start, length), ratio in slices:
            rows = slice(start - first, start - first + length)
            part = dataclasses.replace(adapter, up=adapter.up[rows], bias=None)
            out.append(Contribution(target, (model_key, (dim, start, length)), module_key, part, strength * ratio))
            if adapter.bias is not None and bias_key is not None:
                out.append(Contribution(target, (bias_key, (dim, start, length)), module_key,
                                        adapter_types.BiasChange(adapter.bias[rows]), strength * ratio))
        return out
    coefficient = strength * weights.ratio(model_key, offset)
    if not isinstance(adapter, adapter_types.BiasChange):
        out.append(Contribution(target, key, module_key, adapter, coefficient))
    bias = adapter.bias_delta if isinstance(adapter, adapter_types.BiasChange) else adapter.bias
    bias_key = _bias_key(key)
    if bias is not None and bias_key is not None:
        out.append(Contribution(target, bias_key, module_key, adapter_types.BiasChange(bias), coefficient))
    return out


def _applied(module, contributions: list[Contribution], shapes: dict,
             fused: bool = False) -> list[core_differences.Applied]:
    """What the report compares with ComfyUI core: each weight contribution with the shape it lands on."""
    out = []
    for c in contributions:
        if isinstance(c.adapter, adapter_types.BiasChange):
            continue
        model_key, offset = (c.host_key[0], c.host_key[1]) if isinstance(c.host_key, tuple) else (c.host_key, None)
        shape = shapes.get(model_key)
        out.append(core_differences.Applied(module, c.adapter, c.coefficient, _sliced(shape, offset), fused))
    return out


def _sliced(shape: tuple[int, ...] | None, offset) -> tuple[int, ...] | None:
    """The shape of a weight's row slice (dim, start, length), or the weight's own shape without one."""
    if shape is None or offset is None:
        return shape
    dim, _, length = offset
    return (*shape[:dim], length, *shape[dim + 1:])


def _log_problems(report: LoraReport, modules: int) -> None:
    if report.misfits:
        log.warning("LoRA Deck: %s: %d modules do not fit this model's shapes and were skipped (e.g. %s)",
                    report.name, len(report.misfits), report.misfits[0])
    if report.unmatched:
        examples = ", ".join(report.unmatched[:3])
        log.warning("LoRA Deck: %s: %d of %d modules matched nothing in this model (e.g. %s)%s",
                    report.name, len(report.unmatched), modules, examples,
                    f"; {report.note}" if report.note else "")
    elif report.note:
        log.warning("LoRA Deck: %s: %s", report.name, report.note)


def _misfit(adapter, shape: tuple[int, ...] | None, offset) -> str:
    """Why the adapter's change cannot land on a weight of this shape ("" when it can).

    The change is computed on the meta device: shapes only, no data and no arithmetic, so every adapter
    type is checked by its own code at no cost before the host would fail on it mid-sampling.
    """
    if shape is None or not hasattr(adapter, "on"):
        return ""
    shape = _sliced(shape, offset)  # (dim, start, length): a slice of a fused weight
    reshape = getattr(adapter, "reshape", None)
    if reshape is not None:  # the host zero-pads the weight to `reshape` first (control LoRAs' img_in)
        if len(reshape) != len(shape) or any(r < s for r, s in zip(reshape, shape, strict=True)):
            return f"it would widen the weight {list(shape)} to {list(reshape)}, which is not wider"
        shape = tuple(reshape)
    if _plain_lora_fits(adapter, shape):  # the common case, told by arithmetic alone
        return ""
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


def _widening(module_key: str, adapter, shape: tuple[int, ...] | None) -> list[str]:
    """What the report says of a weight the adapter widens (the host's reshape_weight), or nothing."""
    reshape = getattr(adapter, "reshape", None)
    if reshape is None or shape is None or tuple(reshape) == tuple(shape):
        return []
    return [f"{module_key} from {list(shape)} to {list(reshape)}"]


def _plain_lora_fits(adapter, shape: tuple[int, ...]) -> bool:
    """True when a plain LoRA's up @ down product reshapes to `shape` (what its change computes)."""
    if not isinstance(adapter, adapter_types.LoRA) or adapter.mid is not None or adapter.is_dora:
        return False
    up, down = adapter.up.shape, adapter.down.shape
    if not up or not down:
        return False
    rank_up = math.prod(up[1:])
    return rank_up == down[0] and up[0] * math.prod(down[1:]) == math.prod(shape)


def _bias_key(key):
    """The host key of the bias beside a weight key (a tuple key keeps its row slice and function)."""
    name = key[0] if isinstance(key, tuple) else key
    if not name.endswith(".weight"):
        return None
    bias = name[: -len(".weight")] + ".bias"
    return (bias, *key[1:]) if isinstance(key, tuple) else bias
