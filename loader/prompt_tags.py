"""LoRA tags in prompt text: A1111's `<lora:name:multiplier>` and `<lyco:…>`, read as A1111 reads them.

What A1111 does (modules/extra_networks.py, extensions-builtin/Lora/extra_networks_lora.py):
- a tag is `<(\\w+):([^>]+)>`; its arguments are split at `:`; an argument with exactly one `=` is
  named (`key=value`), every other one is positional;
- positional 1 is the name, 2 the text-encoder multiplier (default 1), 3 the UNet multiplier (default:
  the text-encoder one), 4 `dyn`; `te=`, `unet=`, `dyn=` override them; the tag is removed from the text.

The lora-block-weight extension (scripts/lora_block_weight.py) adds `lbw=` (a preset or a vector),
`lbwe=`, `start=`, `stop=` and `step=A-B`. Here `lbw=` takes anything the pack's block grammar reads
(loader.spec: presets, vectors, assignments); it becomes the stack entry's block spec. `start`/`stop`
become the entry's step schedule (loader.schedule, A1111's meaning), applied by the scheduling nodes.

Where A1111 misreads silently, this module stops with the tag and its character position: a value
that is not a number (in A1111 one such tag cancels every LoRA of the prompt), `te = 0.5` with spaces
(A1111 ignores it), an `=` in a name (A1111 takes the next value as the name), an unknown option, too
many values, a `<LoRA:` in the wrong case (A1111 drops it), a `<lora:` that never closes. Text without
LoRA tags passes through unchanged; `<12:30>`, `<b>` and other networks' tags are left alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from . import schedule as schedules
from .stack import MAX_ROWS, MAX_STRENGTH, StackEntry

KINDS = ("lora", "lyco")
TAG = re.compile(r"<(\w+):([^>]+)>")  # A1111's re_extra_net
_OPENING = re.compile(r"<(lora|lyco)\s*:", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")
_STEP = re.compile(r"^\s*(\d{1,6})\s*-\s*(\d{1,6})\s*$")
OPTIONS = ("te", "unet", "dyn", "lbw", "start", "stop", "step")
POSITIONAL = ("name", "text-encoder multiplier", "UNet multiplier", "dyn")


class PromptTagError(ValueError):
    """A LoRA tag that cannot be read; the message quotes the tag and its 1-based character position."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message)
        self.position = position


class TagEntry(StackEntry):
    """A stack entry from a prompt tag: (lora_name, strength_model, strength_clip), `.blocks`, and the
    tag's `.start`/`.stop` steps (None = from the first / to the last), `.tag` and `.position`. `.schedule` is
    those steps as a loader.schedule step schedule (A1111's meaning; None when the tag sets neither)."""

    start: int | None
    stop: int | None
    tag: str
    position: int

    def __new__(cls, lora_name: str, strength_model: float, strength_clip: float, blocks: str = "", *,
                start: int | None = None, stop: int | None = None, tag: str = "", position: int = 0):
        entry = super().__new__(cls, lora_name, strength_model, strength_clip, blocks,
                                schedules.from_steps(start, stop))
        entry.start, entry.stop, entry.tag, entry.position = start, stop, tag, position
        return entry


@dataclass(frozen=True)
class Tag:
    kind: str  # "lora" or "lyco"
    name: str  # as written (stripped); resolved to a file by loader.names.resolve_tag_name
    te: float
    unet: float
    blocks: str = ""
    start: int | None = None
    stop: int | None = None
    text: str = ""  # the tag as written
    position: int = 0  # 1-based character of its `<`

    def entry(self, lora_name: str | None = None) -> TagEntry:
        """The stack entry: model strength = the UNet multiplier, clip strength = the text-encoder one."""
        return TagEntry(lora_name or self.name, self.unet, self.te, self.blocks, start=self.start,
                        stop=self.stop, tag=self.text, position=self.position)


def parse(text: str) -> tuple[str, list[Tag]]:
    """(the text with every LoRA tag removed, the tags in order); PromptTagError for a malformed tag."""
    if text is None:
        return "", []
    if not isinstance(text, str):
        raise PromptTagError(f"the prompt should be text, not {type(text).__name__}")
    tags: list[Tag] = []
    pieces: list[str] = []
    last = 0
    covered: list[tuple[int, int]] = []
    for match in TAG.finditer(text):
        kind = match.group(1)
        if kind.lower() not in KINDS:
            continue  # `<12:30>`, `<hypernet:…>`: not ours, left in the text
        if kind not in KINDS:
            raise PromptTagError(f"{_where(match)}: {kind!r} is not a tag type A1111 reads (it is case-"
                                 f"sensitive and would drop this tag); write <{kind.lower()}:…>", match.start() + 1)
        tags.append(_tag(match))
        if len(tags) > MAX_ROWS:
            raise PromptTagError(f"more than {MAX_ROWS} LoRA tags in one prompt", match.start() + 1)
        pieces.append(text[last:match.start()])
        last = match.end()
        covered.append(match.span())
    _check_unclosed(text, covered)
    if not tags:
        return text, []
    pieces.append(text[last:])
    return "".join(pieces), tags


def _check_unclosed(text: str, covered: list[tuple[int, int]]) -> None:
    for opening in _OPENING.finditer(text):
        if any(start <= opening.start() < end for start, end in covered):
            continue
        rest = text[opening.end():]
        close = rest.find(">")
        shown = _short(text[opening.start(): opening.end() + (close + 1 if close >= 0 else 40)])
        if close < 0:
            problem = "is never closed with '>'"
        elif close == 0 or not rest[:close].strip():
            problem = "names no LoRA"
        else:
            problem = f"is not a tag A1111 reads (write <{opening.group(1).lower()}:name:multiplier>)"
        raise PromptTagError(f"tag {shown} at character {opening.start() + 1} {problem}", opening.start() + 1)


def _tag(match: re.Match) -> Tag:
    where = _where(match)
    offset = match.start(2)
    positional: list[tuple[str, int]] = []
    named: dict[str, tuple[str, int]] = {}
    for index, item in enumerate(match.group(2).split(":")):
        if "=" in item:
            _named(where, index, item, offset, positional, named)
        else:
            positional.append((item, offset))
        offset += len(item) + 1
    if not positional or not positional[0][0].strip():
        raise PromptTagError(f"{where}: no LoRA name before the first ':' value", match.start() + 1)
    if len(positional) > len(POSITIONAL):
        value, at = positional[len(POSITIONAL)]
        raise PromptTagError(f"{where}: too many values ({len(positional) - 1} after the name; A1111 reads "
                             f"multiplier, UNet multiplier and dyn); {value!r} at character {at + 1}", at + 1)
    return _meaning(match, where, positional, named)


def _named(where: str, index: int, item: str, offset: int, positional: list, named: dict) -> None:
    key, _, value = item.partition("=")
    if index == 0:
        raise PromptTagError(f"{where}: the name {item!r} contains '='; A1111 would read it as an option and take "
                             "the next value as the LoRA's name (rename the file without '=')",
                             offset + 1)
    if key != key.strip() or not key:
        raise PromptTagError(f"{where}: {item!r} at character {offset + 1}: write the option without spaces "
                             f"before '=' ({key.strip() or '?'}={value.strip()}); A1111 would ignore it", offset + 1)
    if key == "lbwe":
        raise PromptTagError(f"{where}: lbwe= names an elemental preset of the lora-block-weight extension; put the "
                             "@BLOCKS:ELEMENTS:value rules in a preset of block_presets.txt and name it with lbw=",
                             offset + 1)
    if key not in OPTIONS:
        raise PromptTagError(f"{where}: unknown option {key!r} at character {offset + 1}; options are "
                             f"{', '.join(o + '=' for o in OPTIONS)}", offset + 1)
    if "=" in value and key != "lbw":
        raise PromptTagError(f"{where}: {item!r} at character {offset + 1} has two '='; A1111 reads that as a "
                             "positional value", offset + 1)
    if key in named:
        raise PromptTagError(f"{where}: {key}= is given twice (character {offset + 1})", offset + 1)
    named[key] = (value, offset + len(key) + 1)


def _meaning(match: re.Match, where: str, positional: list, named: dict) -> Tag:
    name = positional[0][0].strip()
    te = _multiplier(where, positional, 1, POSITIONAL[1], 1.0)
    te = _option_number(where, named, "te", te)
    unet = _multiplier(where, positional, 2, POSITIONAL[2], te)
    unet = _option_number(where, named, "unet", unet)
    if len(positional) > 3 or "dyn" in named:
        at = named["dyn"][1] if "dyn" in named else positional[3][1]
        raise PromptTagError(f"{where}: dyn (DyLoRA's rank) at character {at + 1} is not supported; LoRA Deck "
                             "applies the whole file. Remove it", at + 1)
    blocks = ""
    if "lbw" in named:
        blocks = named["lbw"][0].strip()
        if not blocks:
            raise PromptTagError(f"{where}: lbw= is empty; give a preset (lbw=INS), a vector or a spec",
                                 named["lbw"][1] + 1)
    start, stop = _steps(where, named)
    return Tag(match.group(1), name, te, unet, blocks, start, stop, match.group(0), match.start() + 1)


def _multiplier(where: str, positional: list, index: int, label: str, default: float) -> float:
    if len(positional) <= index:
        return default
    value, at = positional[index]
    number = _number(value)
    if number is None:
        hint = ""
        if index == 2 and ("," in value or re.match(r"^\s*[A-Za-z]", value)):
            hint = f"; for block weights write lbw={value.strip()}"
        raise PromptTagError(f"{where}: {value.strip()!r} at character {at + 1} is not a number (the {label}); "
                             f"A1111 would stop every LoRA of the prompt here{hint}", at + 1)
    return _strength(where, number, label, at)


def _option_number(where: str, named: dict, key: str, default: float) -> float:
    if key not in named:
        return default
    value, at = named[key]
    number = _number(value)
    if number is None:
        raise PromptTagError(f"{where}: {key}={value.strip()!r} at character {at + 1} is not a number", at + 1)
    return _strength(where, number, f"{key}=", at)


def _strength(where: str, number: float, label: str, at: int) -> float:
    if not math.isfinite(number) or abs(number) > MAX_STRENGTH:
        raise PromptTagError(f"{where}: the {label} {number:g} at character {at + 1} is outside "
                             f"-{MAX_STRENGTH:g}…{MAX_STRENGTH:g}", at + 1)
    return number


def _steps(where: str, named: dict) -> tuple[int | None, int | None]:
    start = _step(where, named, "start")
    stop = _step(where, named, "stop")
    if "step" in named:
        value, at = named["step"]
        both = _STEP.match(value)
        if not both:
            raise PromptTagError(f"{where}: step={value.strip()!r} at character {at + 1} should be two step "
                                 "numbers like step=5-10", at + 1)
        if start is not None or stop is not None:
            raise PromptTagError(f"{where}: step= and start=/stop= both set the steps; use one", at + 1)
        start, stop = int(both.group(1)), int(both.group(2))
    if start is not None and stop is not None and stop < start:
        raise PromptTagError(f"{where}: stops at step {stop} before it starts at step {start}", None)
    return start, stop


def _step(where: str, named: dict, key: str) -> int | None:
    if key not in named:
        return None
    value, at = named[key]
    if not re.match(r"^\s*\d{1,6}\s*$", value):
        raise PromptTagError(f"{where}: {key}={value.strip()!r} at character {at + 1} should be a step number "
                             "(0, 1, 2, …)", at + 1)
    return int(value)


def _number(text: str) -> float | None:
    token = text.strip()
    return float(token) if _NUMBER.match(token) else None


def _where(match: re.Match) -> str:
    return f"tag {_short(match.group(0))} at character {match.start() + 1}"


def _short(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def number_text(value: float) -> str:
    """A strength as tags write it: short (0.7, 1, -0.25), and read back to the same float."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def format_tag(name: str, te: float, unet: float, kind: str = "lora") -> str:
    """`<lora:name:te>`, or `<lora:name:te:unet>` when the multipliers differ (A1111's positional order)."""
    if te == unet:
        return f"<{kind}:{name}:{number_text(te)}>"
    return f"<{kind}:{name}:{number_text(te)}:{number_text(unet)}>"
