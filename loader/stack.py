"""Stack entries: what one LoRA in a stack is, and the ecosystem's LORA_STACK type.

LORA_STACK is an informal list of (lora_name, strength_model, strength_clip) shared by Efficiency Nodes,
Comfyroll, Easy-Use and LoRA Manager; their consumers unpack each entry into exactly three names. Our
entries are 3-tuples too, and carry the block spec as an attribute those consumers never see.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from . import schedule as schedules

MAX_STRENGTH = 100.0  # the nodes' strength widgets allow -100…100; beyond that a LoRA only produces noise
MAX_ROWS = 1000  # every row's file is checked when a prompt is validated; a shared workflow cannot ask for millions


class StackError(ValueError):
    """Stack input that cannot be used; the message says which row and why."""


class StackEntry(tuple):
    """(lora_name, strength_model, strength_clip), plus `.blocks`, the row's block-weight spec, and
    `.schedule`, when it acts during sampling (a loader.schedule.Schedule; None = on every step)."""

    blocks: str
    schedule: schedules.Schedule | None

    def __new__(cls, lora_name: str, strength_model: float, strength_clip: float, blocks: str = "",
                schedule: schedules.Schedule | None = None):
        strengths = [_checked(f"{str(lora_name)[:120]}: {label}", value)
                     for label, value in (("strength_model", strength_model), ("strength_clip", strength_clip))]
        entry = super().__new__(cls, (lora_name, *strengths))
        entry.blocks = blocks or ""
        entry.schedule = schedule
        return entry

    @property
    def lora_name(self) -> str:
        return self[0]

    @property
    def strength_model(self) -> float:
        return self[1]

    @property
    def strength_clip(self) -> float:
        return self[2]

    def __repr__(self) -> str:
        extra = f", blocks={self.blocks!r}" if self.blocks else ""
        extra += f", schedule={self.schedule!r}" if self.schedule is not None else ""
        return f"StackEntry({self[0]!r}, {self[1]}, {self[2]}{extra})"


@dataclass(frozen=True)
class Row:
    """One row of the LoraDeckStack node, as its widget stores it."""

    lora: str
    strength: float = 1.0
    clip_strength: float | None = None
    on: bool = True
    blocks: str = ""
    schedule: schedules.Schedule | None = None

    def entry(self) -> StackEntry:
        clip = self.strength if self.clip_strength is None else self.clip_strength
        return StackEntry(self.lora, self.strength, clip, self.blocks, self.schedule)


def rows_from_value(value: object) -> list[Row]:
    """Rows from the widget value: a list of row objects, `{"__value__": [...]}`, or that list as JSON text."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise StackError(f"rows are not valid JSON: {e}") from None
        except (RecursionError, ValueError):
            raise StackError("rows are not a list of row objects (nested too deeply or numbers too long)") from None
    if isinstance(value, dict):
        value = value.get("__value__", value.get("rows"))
    if not isinstance(value, list):
        raise StackError(f"rows should be a list of row objects, not {type(value).__name__}")
    if len(value) > MAX_ROWS:
        raise StackError(f"{len(value)} rows; a stack holds at most {MAX_ROWS}")
    return [_row(i, item) for i, item in enumerate(value, start=1)]


def _row(position: int, item: object) -> Row:
    if not isinstance(item, dict):
        raise StackError(f"row {position} should be an object like "
                         '{"on": true, "lora": "a.safetensors", "strength": 1.0}')
    lora = item.get("lora") or item.get("lora_name") or ""
    if not isinstance(lora, str):
        raise StackError(f"row {position}: lora should be a file name")
    clip = item.get("clip_strength")
    blocks = item.get("blocks") or ""
    if not isinstance(blocks, str):
        raise StackError(f"row {position}: blocks should be a block-weight spec string")
    try:
        schedule = schedules.parse(item.get("schedule"), f"row {position}")
    except schedules.ScheduleError as e:
        raise StackError(str(e)) from None
    return Row(
        lora=lora,
        strength=_strength(position, "strength", item.get("strength", 1.0)),
        clip_strength=None if clip is None else _strength(position, "clip_strength", clip),
        on=_switch(position, item.get("on", True)),
        blocks=blocks,
        schedule=schedule,
    )


def _switch(position: int, value: object) -> bool:
    # bool("false") is True: a toggle typed as text must still mean what it says.
    if value is None or isinstance(value, bool):
        return value is not False
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise StackError(f"row {position}: on should be true or false, not {_short(value)}")


def _strength(position: int, field_name: str, value: object) -> float:
    return _checked(f"row {position}: {field_name}", value)


def _checked(label: str, value: object) -> float:
    if isinstance(value, bool):
        raise StackError(f"{label} {value!r} is not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise StackError(f"{label} {_short(value)} is not a number") from None
    if not math.isfinite(number):
        raise StackError(f"{label} is {number}; strengths must be finite numbers")
    if abs(number) > MAX_STRENGTH:
        raise StackError(f"{label} is {number:g}; strengths must lie between {-MAX_STRENGTH:g} and {MAX_STRENGTH:g}")
    return number


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def entries_from_stack(stack: object) -> list[StackEntry]:
    """Entries from any pack's LORA_STACK (None = empty). Rows with a blank or "None" name are skipped."""
    if stack is None:
        return []
    if not isinstance(stack, (list, tuple)):
        raise StackError(f"LORA_STACK should be a list of (lora_name, strength_model, strength_clip), "
                         f"not {type(stack).__name__}")
    if len(stack) > MAX_ROWS:
        raise StackError(f"LORA_STACK has {len(stack)} entries; a stack holds at most {MAX_ROWS}")
    entries = []
    for position, item in enumerate(stack, start=1):
        if not isinstance(item, (list, tuple)) or len(item) < 3:
            raise StackError(f"LORA_STACK entry {position} should be (lora_name, strength_model, strength_clip)")
        name = item[0]
        if not isinstance(name, str) or name in ("", "None"):
            continue
        strength_model = _strength(position, "strength_model", item[1])
        strength_clip = _strength(position, "strength_clip", item[2])
        entries.append(StackEntry(name, strength_model, strength_clip, getattr(item, "blocks", ""),
                                  _schedule_of(item)))
    return entries


def _schedule_of(item: object) -> schedules.Schedule | None:
    # Another pack's entry may carry an attribute of that name meaning something else: only ours is read.
    schedule = getattr(item, "schedule", None)
    return schedule if isinstance(schedule, schedules.Schedule) else None


def build_stack(base: object, rows: list[Row]) -> list[StackEntry]:
    """The incoming stack (kept first, in order) extended by the enabled rows that name a LoRA."""
    return entries_from_stack(base) + [row.entry() for row in rows if row.on and row.lora]
