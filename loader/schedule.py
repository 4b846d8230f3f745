"""When a LoRA acts during sampling: one grammar for stack rows, prompt tags and the nodes.

A schedule is the optional "schedule" object of a stack row (absent or null = always on):

  {"start": 0.0, "stop": 0.4}                       fractions of the sampling (the host's start_percent)
  {"start": 0, "stop": 12, "unit": "steps"}         sampling steps, A1111 lora-block-weight's start=/stop=
  {"start": 0.6, "stop": 1.0, "from": 0.0, "to": 1.0, "curve": "linear", "keyframes": 5}

Fields: "unit" "fraction" (default) or "steps"; "start" (default 0); "stop" (default 1 for fractions, none =
to the end for steps); "from"/"to" strength multipliers (default 1.0 both); "curve" one of the host's keyframe
interpolations (linear, ease_in, ease_out, ease_in_out) or "hold"; "keyframes" the ramp's keyframe count
(default 5, as the host's CreateHookKeyframesInterpolated node). Unknown keys are an error.

Meaning. The LoRA acts on [start, stop) and not outside it (strength multiplier 0 before start and from stop).
- "hold" (the default without from/to): the multiplier is `from` (default 1.0) over the whole range; "to", when
  given, must equal "from", and "keyframes" does not apply.
- a ramp (any other curve; "linear" when from/to differ and no curve is named): `keyframes` keyframes at
  start + i·(stop − start)/keyframes, i = 0…keyframes−1, with the host's interpolation of `keyframes` values
  from `from` to `to` (the first keyframe is `from`, the last `to`); each holds until the next, the last until
  stop. So the ramp reaches `to` one keyframe before stop, and stop still switches the LoRA off.
- Fractions are the host's start_percent: a keyframe at p takes effect at the first step whose sigma is at or
  below the model's sigma at p (the host's own keyframe evaluation, with its guarantee_steps as its nodes set
  them: 1 for a switch and a ramp's first keyframe, 0 for the ramp's other keyframes).
- Steps are A1111's: counting the sampler's steps from 1, the LoRA acts on step n when start ≤ n < stop
  (lora-block-weight switches a LoRA on at `sampling_step > start − 2` and off at `sampling_step > stop − 2`
  with its 0-based sampling_step, so start=0 and start=1 both mean from the first step, and step=5-10 acts on
  steps 5…9). A ramp keyframe at a fractional step takes effect at the next whole step. Step schedules are
  resolved against the sampler's own sigma list when sampling starts (nodes/hooks.py), so they are exact for
  any scheduler and step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FRACTION = "fraction"
STEPS = "steps"
UNITS = (FRACTION, STEPS)
HOLD = "hold"
CURVES = ("linear", "ease_in", "ease_out", "ease_in_out")  # comfy.hooks.InterpolationMethod._LIST
DEFAULT_KEYFRAMES = 5  # CreateHookKeyframesInterpolated's keyframes_count default
MAX_KEYFRAMES = 100  # CreateHookKeyframesInterpolated's maximum
MAX_STEP = 10000  # the host's KSampler steps maximum
KEYS = ("start", "stop", "unit", "from", "to", "curve", "keyframes")
OFF = 0.0


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message names the row (or tag) and the field."""


@dataclass(frozen=True)
class Keyframe:
    """A strength multiplier from `position` on: a fraction of the sampling, or a 0-based step index."""

    position: float
    strength: float
    guarantee_steps: int = 1


@dataclass(frozen=True)
class Schedule:
    start: float = 0.0
    stop: float | None = 1.0  # None: to the last step (steps only)
    unit: str = FRACTION
    strength_from: float = 1.0
    strength_to: float = 1.0
    curve: str = HOLD
    keyframes: int = DEFAULT_KEYFRAMES

    @property
    def in_steps(self) -> bool:
        return self.unit == STEPS

    def always_on(self) -> bool:
        """True when this schedule changes nothing (start at the beginning, no stop, multiplier 1)."""
        starts_first = self.start <= (1 if self.in_steps else 0)
        no_stop = self.stop is None or (not self.in_steps and self.stop >= 1.0)
        return starts_first and no_stop and self.curve == HOLD and self.strength_from == 1.0

    def describe(self) -> str:
        if self.in_steps:
            where = f"steps {_number(self.start)}…{'' if self.stop is None else _number(self.stop)}"
        else:
            where = f"{self.start * 100:g}…{(self.stop or 1.0) * 100:g} %"
        if self.curve == HOLD:
            return where if self.strength_from == 1.0 else f"{where} at ×{self.strength_from:g}"
        return (f"{where}, {self.curve} ×{self.strength_from:g}→×{self.strength_to:g} "
                f"in {self.keyframes} keyframes")

    def to_json(self) -> dict:
        out: dict = {"start": self.start}
        if self.stop is not None:
            out["stop"] = self.stop
        if self.in_steps:
            out["unit"] = STEPS
        if self.curve != HOLD or self.strength_from != 1.0:
            out["from"] = self.strength_from
        if self.curve != HOLD:
            out.update({"to": self.strength_to, "curve": self.curve, "keyframes": self.keyframes})
        return out


def parse(value: object, where: str) -> Schedule | None:
    """The schedule of a row's "schedule" value (None or absent = always on); ScheduleError naming `where`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ScheduleError(f"{where}: schedule should be an object like {{\"start\": 0.0, \"stop\": 0.4}}, "
                         f"not {type(value).__name__}")
    unknown = [k for k in value if k not in KEYS]
    if unknown:
        raise ScheduleError(f"{where}: schedule has unknown key {unknown[0]!r}; its keys are {', '.join(KEYS)}")
    unit = value.get("unit", FRACTION)
    if unit not in UNITS:
        raise ScheduleError(f"{where}: schedule unit should be \"fraction\" or \"steps\", not {_short(unit)}")
    start, stop = _bounds(value, unit, where)
    strength_from = _multiplier(value, "from", where)
    strength_to = _multiplier(value, "to", where, default=strength_from if "from" in value else 1.0)
    curve = value.get("curve")
    if curve is None:
        curve = "linear" if strength_to != strength_from else HOLD
    if curve != HOLD and curve not in CURVES:
        raise ScheduleError(f"{where}: schedule curve should be one of {', '.join((*CURVES, HOLD))}, "
                         f"not {_short(curve)}")
    if curve == HOLD and strength_to != strength_from:
        raise ScheduleError(f"{where}: schedule curve \"hold\" keeps one strength; \"to\" ({strength_to:g}) must "
                         f"equal \"from\" ({strength_from:g}), or name a curve such as \"linear\"")
    keyframes = value.get("keyframes", DEFAULT_KEYFRAMES)
    if isinstance(keyframes, bool) or not isinstance(keyframes, (int, float)) or keyframes != int(keyframes) \
            or not 2 <= keyframes <= MAX_KEYFRAMES:
        raise ScheduleError(f"{where}: schedule keyframes should be a whole number from 2 to {MAX_KEYFRAMES}, "
                         f"not {_short(keyframes)}")
    return Schedule(start, stop, unit, strength_from, strength_to, curve, int(keyframes))


def from_steps(start: int | None, stop: int | None) -> Schedule | None:
    """A prompt tag's start=/stop= (A1111 steps); None when the tag sets neither."""
    if start is None and stop is None:
        return None
    return Schedule(float(start or 0), None if stop is None else float(stop), STEPS)


def _bounds(value: dict, unit: str, where: str) -> tuple[float, float | None]:
    if unit == STEPS:
        start = _step(value.get("start", 0), "start", where)
        stop = value.get("stop")
        stop = None if stop is None else _step(stop, "stop", where)
    else:
        start = _fraction(value.get("start", 0.0), "start", where)
        stop = _fraction(value.get("stop", 1.0), "stop", where)
    if stop is not None and stop <= start:
        raise ScheduleError(f"{where}: schedule stops ({_number(stop)}) at or before it starts ({_number(start)})")
    return start, stop


def _fraction(value: object, name: str, where: str) -> float:
    number = _real(value, f"{where}: schedule {name}")
    if not 0.0 <= number <= 1.0:
        raise ScheduleError(f"{where}: schedule {name} {number:g} is a fraction of the sampling and must lie in 0…1 "
                         "(for steps add \"unit\": \"steps\")")
    return number


def _step(value: object, name: str, where: str) -> float:
    number = _real(value, f"{where}: schedule {name}")
    if number != int(number) or not 0 <= number <= MAX_STEP:
        raise ScheduleError(f"{where}: schedule {name} {_short(value)} should be a step number 0…{MAX_STEP}")
    return float(number)


def _multiplier(value: dict, name: str, where: str, default: float = 1.0) -> float:
    if name not in value:
        return default
    number = _real(value[name], f"{where}: schedule {name}")
    if abs(number) > 100.0:
        raise ScheduleError(f"{where}: schedule {name} {number:g} must lie between -100 and 100")
    return number


def _real(value: object, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScheduleError(f"{label} {_short(value)} is not a finite number")
    return float(value)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float) -> str:
    return f"{value:g}"


def interpolate(strength_from: float, strength_to: float, count: int, curve: str) -> list[float]:
    """The host's InterpolationMethod.get_weights: `count` values from `strength_from` to `strength_to`."""
    index = [i / (count - 1) for i in range(count)]
    shapes = {"linear": lambda t: t, "ease_in": lambda t: t * t, "ease_out": lambda t: 1 - (1 - t) ** 2,
              "ease_in_out": lambda t: (1 - math.cos(t * math.pi)) / 2}
    shape = shapes[curve]
    return [strength_from + (strength_to - strength_from) * shape(t) for t in index]


def keyframes(schedule: Schedule, total_steps: int | None = None) -> list[Keyframe]:
    """The keyframes of a schedule, in order. Positions: fractions, or 0-based step indices for step
    schedules (which need `total_steps`, the sampler's step count). A leading 0 keyframe when the schedule
    starts late; a trailing 0 keyframe at stop when it stops early."""
    if schedule.in_steps:
        if total_steps is None:
            raise ValueError("a step schedule needs the sampler's step count")
        start = max(schedule.start - 1, 0.0)  # A1111 step n (from 1) is step index n - 1
        stop = float(total_steps) if schedule.stop is None else min(schedule.stop - 1, float(total_steps))
        stop = max(stop, start)
        first, last = 0.0, float(total_steps)
    else:
        start, stop = schedule.start, schedule.stop
        first, last = 0.0, 1.0
    frames = [Keyframe(first, OFF)] if start > first else []
    if schedule.curve == HOLD:
        frames.append(Keyframe(start, schedule.strength_from))
    else:
        strengths = interpolate(schedule.strength_from, schedule.strength_to, schedule.keyframes, schedule.curve)
        width = (stop - start) / schedule.keyframes
        frames += [Keyframe(start + i * width, s, 1 if i == 0 else 0) for i, s in enumerate(strengths)]
    if stop < last:
        frames.append(Keyframe(stop, OFF))
    return frames
