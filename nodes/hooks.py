"""A stack as the host's hooks (`comfy.hooks`): scheduled LoRAs and LoRAs for one prompt's conditioning.

Each distinct schedule of a stack (loader.schedule; None = always on) becomes one host `WeightHook` whose
weights are the same fused patches the plain path registers (patching.plan_stack / FusedStackPatch: block
weights, element weights and every adapter type folded exactly as LoraDeckApply folds them), already mapped
to this model's keys, so the host's hook path takes them as they are (`need_weight_init = False`, as core's
`create_hook_model_as_lora` does). The host then patches them per conditioning group and per keyframe, with
its own `calculate_weight` (FusedStackPatch is a WeightAdapterBase), and its sampler runs them.

Keyframes: fraction schedules become the host's `HookKeyframe`s (start_percent, guarantee_steps as its
nodes set them). Step schedules become a `StepKeyframes` group, which builds its keyframes when sampling
starts from the sampler's own sigma list (`transformer_options["sample_sigmas"]`, which the host's sampler
sets and its keyframe code already reads): a switch at step index n gets the sigma threshold halfway between
the sigmas of steps n−1 and n, so it takes effect exactly at step n whatever the scheduler, step count or
denoise. The host's text-encoder schedule (SetClipHooks with schedule_clip) reads start_percent before
sampling; a step schedule has no keyframes then, so its text-encoder part acts on the whole prompt (as in
A1111, which encodes the prompt once before the first step).
"""

from __future__ import annotations

import math

import comfy.hooks

from ..loader import schedule as schedules
from ..loader.stack import StackEntry
from . import patching

NEVER = -1.0  # a sigma threshold no step reaches (the host's keyframes switch when threshold ≥ the step's sigma)


class StepKeyframes(comfy.hooks.HookKeyframeGroup):
    """The keyframes of a step schedule, resolved against each sampling run's own sigmas."""

    def __init__(self, schedule: schedules.Schedule | None = None):
        super().__init__()
        self.schedule = schedule
        self._resolved_for = None

    def clone(self):
        return StepKeyframes(self.schedule)

    def initialize_timesteps(self, model):
        self._resolved_for = None  # a new sampling run: resolve again at its first step

    def prepare_current_keyframe(self, curr_t, transformer_options):
        sigmas = transformer_options.get("sample_sigmas")
        if sigmas is not None and sigmas is not self._resolved_for:
            self._resolve(sigmas)
        return super().prepare_current_keyframe(curr_t, transformer_options)

    def _resolve(self, sigmas) -> None:
        values = [float(s) for s in sigmas]
        total = len(values) - 1  # the sampler's sigmas end with the final one, after the last step
        self.keyframes = []
        for frame in schedules.keyframes(self.schedule, total):
            keyframe = comfy.hooks.HookKeyframe(frame.strength, start_percent=0.0, guarantee_steps=0)
            keyframe.start_t = _threshold(math.ceil(frame.position - 1e-9), values, total)
            self.keyframes.append(keyframe)
        self._resolved_for = sigmas
        self._current_used_steps = 0
        self._current_index = 0
        self._current_strength = None
        self._curr_t = -1.0
        self._set_first_as_current()


def _threshold(index: int, sigmas: list[float], total: int) -> float:
    if index <= 0:
        return comfy.hooks.HookKeyframe(1.0).start_t  # before the first step, as the host's own default
    if index >= total:
        return NEVER
    return (sigmas[index - 1] + sigmas[index]) / 2


def keyframe_group(schedule: schedules.Schedule | None) -> comfy.hooks.HookKeyframeGroup:
    """The host keyframes of a schedule (an empty group = always on, strength 1)."""
    if schedule is None:
        return comfy.hooks.HookKeyframeGroup()
    if schedule.in_steps:
        return StepKeyframes(schedule)
    group = comfy.hooks.HookKeyframeGroup()
    for frame in schedules.keyframes(schedule):
        group.add(comfy.hooks.HookKeyframe(frame.strength, start_percent=frame.position,
                                           guarantee_steps=frame.guarantee_steps))
    return group


def weight_hook(patches: patching.StackPatches, schedule: schedules.Schedule | None) -> comfy.hooks.WeightHook:
    """One host WeightHook holding a group's fused patches (model and text encoder), with its keyframes."""
    by_target = patches.by_target()
    hook = comfy.hooks.WeightHook()
    hook.weights = by_target["model"]
    hook.weights_clip = by_target["clip"]
    hook.need_weight_init = False
    hook.hook_keyframe = keyframe_group(schedule)
    return hook


def hooks_for_groups(planned: patching.PlannedStack, keep=lambda group: True) -> comfy.hooks.HookGroup | None:
    """A HookGroup with one hook per planned group (group key = schedule), None when no group has patches."""
    group = comfy.hooks.HookGroup()
    for schedule, patches in planned.groups.items():
        if keep(schedule):
            group.add(weight_hook(patches, schedule))
    return group if len(group) else None


def stack_hooks(model, clip, entries: list[StackEntry], skip_unloadable: bool = False,
                split_qkv_scale: str = "auto"):
    """(HookGroup or None, reports): the whole stack as hooks, one per distinct schedule."""
    planned = patching.plan_stack(model, clip, entries, skip_unloadable, split_qkv_scale,
                                  group_of=lambda entry, _contribution: _key(entry.schedule))
    _count_keys(planned)
    return hooks_for_groups(planned), planned.reports


def apply_scheduled(model, clip, entries: list[StackEntry], conditionings: list, skip_unloadable: bool = False,
                    split_qkv_scale: str = "auto"):
    """(model, clip, conditionings, reports): unscheduled rows as LoraDeckApply (plain patches), the diffusion
    model part of scheduled rows as hooks set on every given conditioning; their text-encoder part is a plain
    patch (A1111's meaning: the prompt is encoded once, before the first step)."""
    if not any(_key(entry.schedule) is not None for entry in entries):
        new_model, new_clip, reports = patching.apply_stack(model, clip, entries, skip_unloadable, split_qkv_scale)
        return new_model, new_clip, conditionings, reports
    new_model = model.clone() if model is not None else None
    new_clip = clip.clone() if clip is not None else None

    def group_of(entry, contribution):
        return None if contribution.target == "clip" else _key(entry.schedule)

    planned = patching.plan_stack(model, clip, entries, skip_unloadable, split_qkv_scale, group_of)
    accepted = planned.groups[None].register(new_model, new_clip) if None in planned.groups else {}
    _count_keys(planned, accepted)
    for metadata in planned.metadata:
        patching.attach_metadata(metadata, new_model, new_clip)
    hooks = hooks_for_groups(planned, keep=lambda schedule: schedule is not None)
    cache: dict = {}  # one combined HookGroup for conds that share hooks, so the host batches them together
    hooked = [None if c is None else comfy.hooks.set_hooks_for_conditioning(c, hooks, cache=cache)
              for c in conditionings]
    return new_model, new_clip, hooked, planned.reports


def _key(schedule: schedules.Schedule | None) -> schedules.Schedule | None:
    """Rows whose schedule changes nothing are plain rows (no hook, no slowdown)."""
    return None if schedule is None or schedule.always_on() else schedule


def _count_keys(planned: patching.PlannedStack, accepted: dict | None = None) -> None:
    """Each report's key counts: the planned keys (hooks register them on the patcher when sampling starts),
    or for plain patches the keys the patcher accepted."""
    for report, keys in zip(planned.reports, planned.contributed, strict=True):
        report.model_keys = len(keys["model"])
        report.clip_keys = len(keys["clip"] & accepted["clip"]) if accepted else len(keys["clip"])


def ignored_schedules(entries: list[StackEntry], heading: str) -> str:
    """For a node that applies every row on every step: its scheduled rows named under `heading`, or ""."""
    scheduled = describe(entries)
    return f"\n{heading}:\n{scheduled}" if scheduled else ""


def describe(entries: list[StackEntry]) -> str:
    """One line per scheduled entry, for the nodes' reports."""
    lines = [f"{entry.lora_name}: {entry.schedule.describe()}" for entry in entries
             if _key(entry.schedule) is not None]
    return "\n".join(lines)
