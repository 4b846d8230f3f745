"""The block-weight grammar: a spec string becomes one ratio for every model weight.

A spec is a list of statements separated by `;` or new lines. Each statement is one of:

- a preset name: A1111's `NONE ALL INS IND INALL MIDD OUTD OUTS OUTALL ALL0.5 FLUXALL` or a user preset;
- a positional vector `v1,v2,…`, read by (model family, length) exactly as A1111 lora-block-weight reads it:
  UNets 17/26 (SD1 native) and 12/20 (SDXL native), each id-based so any of the four works on any UNet;
  double/single transformers `3+N` (A1111's 61 for Flux: CLIP,T5,IN,D00…,S00…,OUT), `1+N` (58: BASE + blocks)
  and `N` (57: blocks only); other transformers `1+N` and `N`. `BASE` scales the text encoder(s). Blocks a
  short UNet vector leaves out are 0, as in A1111; slots a layout has no position for keep the default;
  a single number sets every slot;
- assignments `TARGET=value, …`: TARGET is an id (`IN04`), a range in network order (`IN04-OUT05`), a
  glob (`OUT*`, `S1?`), a group alias (`BASE`, `TE`, `CLIP`, `T5`, `IN`, `MID`, `OUT`, `DOUBLE`, `SINGLE`,
  `ALLBLOCKS`), several of those separated by spaces, optionally after `NOT`; `default=v` sets every slot
  before anything else; `A=`, `B=` and `SEED=` set variables;
- elemental directives `@BLOCKS:ELEMENTS:value` (A1111 lbwe style): BLOCKS as a target list (empty = all),
  ELEMENTS space-separated substrings of the weight's path inside its block (`attn1 attn2 ff proj`,
  `img_attn txt_mlp`, `qkv.q linear1.mlp` for the row slices of fused weights), optionally after `NOT`,
  empty = all. The value multiplies the block ratio; `=value` replaces it (A1111 lbwe). Last match wins.

Values: numbers, `A`/`B` (variables, default 1.0), `a`/`b` (half of them), `R` (seeded uniform random in
[0, 1], 3 decimals, as A1111) and `U` (seeded uniform random in [-0.5, 1.5], as A1111 code). Random
values are drawn in text order from `seed`, so a spec always resolves the same way.

Resolution order: default, then positional vectors/presets, then assignments (left to right), then
elemental directives; the patching code multiplies the result by the LoRA's strength.
"""

from __future__ import annotations

import fnmatch
import math
import random
import re
from dataclasses import dataclass, field

from .blocks import BASE, EMB, FINAL, BlockMap, same_kind
from .blocks import compress_ids as _compress
from .presets import A1111_PRESETS

MAX_SPEC_CHARS = 20_000
MAX_STATEMENTS = 500
MAX_ITEMS = 2_000
MAX_ABS_VALUE = 100.0
RANDOM_RANGES = {"R": (0.0, 1.0), "U": (-0.5, 1.5)}

BLOCKID26 = ("BASE", *(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12)))
BLOCKID17 = ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05",
             "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11")
BLOCKID12 = ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04",
             "OUT05")
BLOCKID20 = ("BASE", *(f"IN{i:02d}" for i in range(9)), "M00", *(f"OUT{i:02d}" for i in range(9)))
A1111_UNET_LAYOUTS = {12: BLOCKID12, 17: BLOCKID17, 20: BLOCKID20, 26: BLOCKID26}
NATIVE_UNET_LENGTHS = {"sd1": (17, 26), "sdxl": (12, 20), "unet": (12, 17, 20, 26)}

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")
_VARIABLES = ("A", "B", "SEED")


_LONG_QUOTE = re.compile(r"('[^']{40})[^']{20,}'")


class SpecError(ValueError):
    """A block-weight spec that cannot be read; the message says what was expected and where.

    `position` is the 1-based character the message names ("character N: …"), None for the whole spec."""

    def __init__(self, message: str):
        # A shared workflow may put kilobytes into one token: quote only its start.
        super().__init__(_LONG_QUOTE.sub(lambda m: m.group(1) + "…'", message))
        where = re.match(r"character (\d+):", message)
        self.position = int(where.group(1)) if where else None


@dataclass(frozen=True)
class ElementRule:
    blocks: frozenset[str] | None  # None = every slot
    elements: tuple[str, ...]  # empty = every weight
    negate: bool
    value: float
    replace: bool

    def matches(self, slot: str, path: str) -> bool:
        if self.blocks is not None and slot not in self.blocks:
            return False
        if not self.elements:
            return True
        return any(e in path for e in self.elements) != self.negate


@dataclass(frozen=True)
class BlockWeights:
    block_map: BlockMap
    by_block: dict[str, float]
    default: float = 1.0
    rules: tuple[ElementRule, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list, compare=False)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def ratio(self, model_key: str, offset: tuple[int, int, int] | None = None) -> float:
        """The multiplier for one model weight (or the row slice `offset` = (dim, start, length) of it)."""
        cache_key = (model_key, offset)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._ratio(model_key, offset)
        return self._cache[cache_key]

    def _ratio(self, model_key: str, offset) -> float:
        slot = self.block_map.block_of(model_key)
        if slot is None:
            return 1.0
        value = self.by_block.get(slot, self.default)
        if not self.rules:
            return value
        path = self.block_map.element_path(model_key)
        parts = self.block_map.parts_in(model_key, offset)
        if not parts:
            return self._apply(slot, path, value)
        found = {self._apply(slot, f"{path}.{p.name}", value) for p in parts}
        if len(found) == 1:
            return found.pop()
        whole = self._apply(slot, path, value)
        where = "" if offset is None else f" rows {offset[1]}…{offset[1] + offset[2] - 1}"
        self.warnings.append(f"{model_key}{where} holds {', '.join(p.name for p in parts)} with different "
                             f"element ratios in one patch; used {whole:g} for all of it")
        return whole

    def _apply(self, slot: str, path: str, value: float) -> float:
        result = value
        for rule in self.rules:
            if rule.matches(slot, path):
                result = rule.value if rule.replace else value * rule.value
        return result

    def row_slices(self, model_key: str, offset: tuple[int, int, int] | None = None):
        """[((0, start, length), ratio), …] covering a fused weight (or its slice `offset`) part by part,
        or None when one ratio fits all of it. Splitting a LoRA patch by these rows (the up factor's rows)
        gives each of q/k/v/mlp its own ratio."""
        parts = self.block_map.parts_in(model_key, offset)
        slot = self.block_map.block_of(model_key)
        if not parts or slot is None or not self.rules:
            return None
        lo, hi = (0, parts[-1].stop) if offset is None else (offset[1], offset[1] + offset[2])
        path = self.block_map.element_path(model_key)
        value = self.by_block.get(slot, self.default)
        slices = [((0, max(lo, p.start), min(hi, p.stop) - max(lo, p.start)),
                   self._apply(slot, f"{path}.{p.name}", value)) for p in parts]
        return slices if len({r for _, r in slices}) > 1 else None

    @property
    def is_uniform(self) -> bool:
        return not self.rules and all(v == 1.0 for v in self.by_block.values()) and self.default == 1.0

    def summary(self) -> str:
        """How the spec was read and the resolved value of every slot, compressed into runs."""
        runs: list[str] = []
        ids = list(self.block_map.ids)
        i = 0
        while i < len(ids):
            j = i
            value = self.by_block.get(ids[i], self.default)
            while j + 1 < len(ids) and self.by_block.get(ids[j + 1], self.default) == value \
                    and same_kind(ids[i], ids[j + 1]):
                j += 1
            label = ids[i] if i == j else f"{ids[i]}-{ids[j]}"
            runs.append(f"{label}={value:g}")
            i = j + 1
        lines = [*list(self.notes), ", ".join(runs)]
        lines += [f"element rule {n + 1}: {text}" for n, text in enumerate(self.rule_texts())]
        return "\n".join(lines)

    def rule_texts(self) -> list[str]:
        """Each elemental directive as read, e.g. `IN05…OUT05: attn2 ×0.5`."""
        return [_describe_rule(r, self.block_map.ids) for r in self.rules]


def _describe_rule(rule: ElementRule, ids: tuple[str, ...]) -> str:
    blocks = "all slots" if rule.blocks is None else _compress(i for i in ids if i in rule.blocks)
    elements = " ".join(rule.elements) or "every weight"
    op = "=" if rule.replace else "×"
    return f"{blocks}: {'NOT ' if rule.negate else ''}{elements} {op}{rule.value:g}"


@dataclass
class _Statement:
    text: str
    pos: int  # 0-based character offset in the spec


class _Reader:
    def __init__(self, block_map: BlockMap, presets: dict[str, str], a: float, b: float, seed: int,
                 check_elements: bool = True):
        self.map = block_map
        self.check_elements = check_elements
        self.presets = {**A1111_PRESETS, **presets}
        self.variables = {"A": float(a), "B": float(b), "SEED": int(seed)}
        self.rng: random.Random | None = None
        self.default: float | None = None
        self.vectors: list[tuple[dict[str, float], str]] = []
        self.assignments: list[tuple[set[str], float]] = []
        self.rules: list[ElementRule] = []
        self.notes: list[str] = []
        self.items = 0
        self.explicit: frozenset[str] = frozenset()

    # statements -----------------------------------------------------------------------------------------
    def read(self, text: str) -> None:
        statements = _split_statements(text)
        self.explicit = frozenset(self._read_variables(statements))
        self.rng = random.Random(self.variables["SEED"])
        for st in statements:
            self._statement(st, from_preset=None)

    def _read_variables(self, statements: list[_Statement], keep: frozenset[str] = frozenset()) -> set[str]:
        """Set A, B and SEED from `statements` (except names in `keep`); return the names set."""
        found: set[str] = set()
        for st in statements:
            if st.text.startswith("@") or "=" not in st.text:
                continue
            for item, pos in _pieces(st.text, st.pos, ","):
                target, _, value = item.partition("=")
                name = target.strip().upper()
                if name in _VARIABLES:
                    number = _number(value.strip(), pos + len(target) + 1)
                    if number is None:
                        raise SpecError(f"character {pos + 1}: {name} must be set to a number, got "
                                        f"{value.strip()!r}")
                    if name not in keep:
                        self.variables[name] = int(number) if name == "SEED" else number
                        found.add(name)
        return found

    def _statement(self, st: _Statement, from_preset: str | None) -> None:
        if st.text.startswith("@"):
            self._elemental(st)
        elif "=" in st.text:
            self._assignments(st)
        else:
            self._positional(st, from_preset)

    def _positional(self, st: _Statement, from_preset: str | None) -> None:
        label = re.match(r"^([A-Za-z_][A-Za-z0-9_.+\-]*)\s*:\s*(?=\S)", st.text)
        if label and "," in st.text:  # Inspire's LABEL:v1,v2,… — the label only names the vector
            st = _Statement(st.text[label.end():], st.pos + label.end())
        name = st.text.strip()
        preset = self._preset(name)
        if preset is not None:
            if from_preset is not None:
                raise SpecError(f"preset {from_preset!r} names preset {name!r}; presets cannot nest")
            self.notes.append(f"preset {name}: {preset}")
            inner = [_Statement(s.text, st.pos) for s in _split_statements(preset)]
            if "SEED" in self._read_variables(inner, keep=self.explicit):  # the spec's own A/B/SEED win
                self.rng = random.Random(self.variables["SEED"])
            for statement in inner:
                self._statement(statement, from_preset=name)
            return
        if "," not in name and _looks_like_name(name):
            raise SpecError(f"character {st.pos + 1}: {name!r} is not a preset; known presets: "
                            f"{', '.join(sorted(self.presets))}")
        values = [(self._value(tok, pos), pos) for tok, pos in _pieces(st.text, st.pos, ",")]
        self._count(len(values), st.pos)
        if len(values) == 1:
            self.notes.append(f"{values[0][0]:g} for every slot")
            self.vectors.append(({slot: values[0][0] for slot in self.map.ids}, "one value for every slot"))
            return
        self.vectors.append(self._layout(values, st))

    def _layout(self, values: list[tuple[float, int]], st: _Statement) -> tuple[dict[str, float], str]:
        layouts = positional_layouts(self.map)
        n = len(values)
        if n not in layouts:
            raise SpecError(f"character {st.pos + 1}: {n} values, but a {_family_name(self.map)} model reads "
                            f"{_lengths_text(self.map, layouts)}")
        name, positions, zero_absent = layouts[n]
        assigned: dict[str, float] = dict.fromkeys(zero_absent, 0.0)
        missing = []
        for (value, _), (label, slots) in zip(values, positions, strict=False):
            if not slots:
                missing.append(label)
            for slot in slots:
                assigned[slot] = value
        note = f"{n} values read as {name}"
        pairs = zip(values, positions, strict=False)
        if missing and any(v for (v, _), (label, _) in pairs if label in missing):
            note += f" ({', '.join(missing)} not in this model)"
        self.notes.append(note)
        return assigned, note

    def _assignments(self, st: _Statement) -> None:
        for item, pos in _pieces(st.text, st.pos, ","):
            target, sep, value = item.partition("=")
            if not sep:
                raise SpecError(f"character {pos + 1}: {item.strip()!r} should look like TARGET=value "
                                "(separate a positional vector from assignments with ';')")
            name = target.strip()
            if name.upper() in _VARIABLES:
                continue
            self._count(1, pos)
            number = self._value(value.strip(), pos + len(target) + 1)
            if name.lower() == "default":
                self.default = number
                continue
            if not name:
                raise SpecError(f"character {pos + 1}: missing a block id before '='")
            self.assignments.append((self._targets(name, pos), number))

    def _elemental(self, st: _Statement) -> None:
        fields = st.text[1:].split(":")
        if len(fields) != 3:
            raise SpecError(f"character {st.pos + 1}: an elemental directive looks like "
                            f"@BLOCKS:ELEMENTS:value (BLOCKS and ELEMENTS may be empty), got {st.text!r}")
        blocks_text, elements_text, value_text = fields
        self._count(1, st.pos)
        blocks_text = blocks_text.strip()
        blocks = frozenset(self._targets(blocks_text, st.pos + 1)) if blocks_text else None
        words = elements_text.split()
        negate = bool(words) and words[0].upper() == "NOT"
        elements = tuple(w.lower() for w in (words[1:] if negate else words))
        if negate and not elements:
            raise SpecError(f"character {st.pos + 1}: NOT needs at least one element after it")
        value_pos = st.pos + 1 + len(blocks_text) + len(elements_text) + 2
        value_text = value_text.strip()
        replace = value_text.startswith("=")
        value = self._value(value_text[1:].strip() if replace else value_text, value_pos)
        self._check_elements(elements, blocks, st.pos)
        self.rules.append(ElementRule(blocks, elements, negate, value, replace))

    def _check_elements(self, elements: tuple[str, ...], blocks: frozenset[str] | None, pos: int) -> None:
        if not elements or not self.check_elements:
            return
        paths = set()
        for key, slot in self.map._by_key.items():
            if blocks is None or slot in blocks:
                path = self.map.element_path(key)
                paths.add(path)
                paths.update(f"{path}.{p.name}" for p in self.map.fused_parts(key))
        if not paths:
            return
        for element in elements:
            if not any(element in p for p in paths):
                sample = sorted({w for p in paths for w in p.split(".") if not w.isdigit()})[:16]
                raise SpecError(f"character {pos + 1}: element {element!r} matches no weight in those "
                                f"blocks; their weights are named like {', '.join(sample)}")

    # targets and values ---------------------------------------------------------------------------------
    def _targets(self, text: str, pos: int) -> set[str]:
        words = text.split()
        negate = words[0].upper() == "NOT"
        if negate:
            words = words[1:]
            if not words:
                raise SpecError(f"character {pos + 1}: NOT needs a block after it")
        chosen: set[str] = set()
        for word in words:
            chosen |= self._target(word.upper(), pos)
        return set(self.map.ids) - chosen if negate else chosen

    def _target(self, word: str, pos: int) -> set[str]:
        if any(c in word for c in "*?["):
            found = {i for i in self.map.ids if fnmatch.fnmatchcase(i, word)}
            if not found:
                raise SpecError(f"character {pos + 1}: {word!r} matches no block of this model; "
                                f"{self._known()}")
            return found
        if "-" in word:
            ends = [self._single(part, pos) for part in word.split("-")]
            index = [self.map.ids.index(e) for e in ends]
            return set(self.map.ids[min(index): max(index) + 1])
        return set(self._resolve(word, pos))

    def _resolve(self, word: str, pos: int) -> tuple[str, ...]:
        if word in self.map.ids:
            return (word,)
        if self.map.aliases.get(word):
            return self.map.aliases[word]
        raise SpecError(f"character {pos + 1}: unknown block id {word!r}; {self._known()}")

    def _single(self, word: str, pos: int) -> str:
        slots = self._resolve(word, pos) if word else ()
        if len(slots) != 1:
            raise SpecError(f"character {pos + 1}: a range needs single block ids at both ends, got {word!r}")
        return slots[0]

    def _known(self) -> str:
        aliases = ", ".join(a for a, ids in self.map.aliases.items() if ids)
        return f"this {_family_name(self.map)} model has {_compress(self.map.ids)} (groups: {aliases})"

    def _preset(self, name: str) -> str | None:
        if name in self.presets:
            return self.presets[name]
        folded = {k.upper(): v for k, v in self.presets.items()}
        return folded.get(name.upper())

    def _value(self, token: str, pos: int) -> float:
        number = _number(token, pos)
        if number is None:
            if token in ("A", "B"):
                number = float(self.variables[token])
            elif token in ("a", "b"):
                number = float(self.variables[token.upper()]) / 2
            elif token.upper() in RANDOM_RANGES:
                lo, hi = RANDOM_RANGES[token.upper()]
                number = round(self.rng.uniform(lo, hi), 3)
            else:
                shown = token if len(token) <= 40 else token[:40] + "…"
                raise SpecError(f"character {pos + 1}: {shown!r} is not a value; expected a number, A, B, "
                                "a or b (half of A/B), R (random 0…1) or U (random -0.5…1.5)")
        if not math.isfinite(number) or abs(number) > MAX_ABS_VALUE:
            raise SpecError(f"character {pos + 1}: {token!r} is outside -{MAX_ABS_VALUE:g}…{MAX_ABS_VALUE:g}")
        return number

    def _count(self, n: int, pos: int) -> None:
        self.items += n
        if self.items > MAX_ITEMS:
            raise SpecError(f"character {pos + 1}: more than {MAX_ITEMS} values; a spec this long is not a "
                            "block-weight spec")

    def result(self) -> BlockWeights:
        default = 1.0 if self.default is None else self.default
        values = dict.fromkeys(self.map.ids, default)
        for assigned, _ in self.vectors:
            values.update(assigned)
        for targets, number in self.assignments:
            for slot in targets:
                values[slot] = number
        notes = list(self.notes)
        if self.default is not None:
            notes.insert(0, f"default={default:g}")
        return BlockWeights(self.map, values, default, tuple(self.rules), tuple(notes))


def parse(text: str | None, block_map: BlockMap, *, presets: dict[str, str] | None = None,
          a: float = 1.0, b: float = 1.0, seed: int = 0, check_elements: bool = True) -> BlockWeights:
    """Read a spec for `block_map`'s model; raises SpecError saying what was expected and where.

    `check_elements=False` skips checking that element names match a weight, for maps that stand in for a
    model without its weights' names (the block editor's)."""
    text = text or ""
    if not isinstance(text, str):
        raise SpecError(f"a block-weight spec is text, got {type(text).__name__}")
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"the spec has {len(text)} characters; the limit is {MAX_SPEC_CHARS}")
    bad = next((i for i, c in enumerate(text) if ord(c) < 32 and c not in "\t\r\n"), None)
    if bad is not None:
        raise SpecError(f"character {bad + 1}: control character {text[bad]!r} in the spec")
    reader = _Reader(block_map, presets or {}, a, b, seed, check_elements)
    if text.strip():
        reader.read(text)
    return reader.result()


def positional_layouts(block_map: BlockMap) -> dict[int, tuple[str, list, list[str]]]:
    """length -> (layout name, [(position label, slots it sets)], slots set to 0 when left out)."""
    te = block_map.text_encoders
    layouts = {}
    if block_map.family in NATIVE_UNET_LENGTHS:
        blocks = set(block_map.blocks)
        for n, labels in A1111_UNET_LAYOUTS.items():
            positions = [(label, te if label == BASE else ((label,) if label in blocks else ()))
                         for label in labels]
            absent = [b for b in block_map.blocks if b not in labels]
            layouts[n] = (f"A1111 {_unet_layout_name(n)} ({','.join(labels[:3])},…)", positions, absent)
        return layouts
    blocks = [(b, (b,)) for b in block_map.blocks]
    n = len(blocks)
    if block_map.family == "double_single":
        aliases = block_map.aliases
        head = [("CLIP", aliases.get("CLIP", ())), ("T5", aliases.get("T5", ())),
                ("IN", (EMB,) if EMB in block_map.ids else ())]
        tail = [("OUT", (FINAL,) if FINAL in block_map.ids else ())]
        name = f"A1111 Flux-style (CLIP,T5,IN,{_compress(block_map.blocks)},OUT)"
        layouts[n + 4] = (name, head + blocks + tail, [])
    layouts[n + 1] = (f"BASE,{_compress(block_map.blocks)}", [(BASE, te), *blocks], [])
    layouts[n] = (_compress(block_map.blocks), blocks, [])
    return layouts


def _unet_layout_name(n: int) -> str:
    return {17: "SD1 LoRA", 26: "SD1 LyCORIS", 12: "SDXL LoRA", 20: "SDXL LyCORIS"}[n]


def _lengths_text(block_map: BlockMap, layouts: dict) -> str:
    if block_map.family in NATIVE_UNET_LENGTHS:
        native = NATIVE_UNET_LENGTHS[block_map.family]
        others = [n for n in sorted(layouts) if n not in native]
        text = " or ".join(str(n) for n in native) + " values"
        return text + (f" (A1111 also reads {' and '.join(map(str, others))})" if others else "")
    return " or ".join(f"{n} ({layouts[n][0]})" for n in sorted(layouts, reverse=True)) + " values"


def _family_name(block_map: BlockMap) -> str:
    return block_map.architecture or block_map.family


def _split_statements(text: str) -> list[_Statement]:
    statements = [_Statement(piece, pos) for piece, pos in _pieces(text, 0, r";|\r?\n")]
    statements = [s for s in statements if s.text]
    if len(statements) > MAX_STATEMENTS:
        raise SpecError(f"the spec has {len(statements)} statements; the limit is {MAX_STATEMENTS}")
    return statements


def _pieces(text: str, start: int, separator: str):
    """(stripped piece, absolute 0-based position) between separators."""
    pos = 0
    for match in re.finditer(separator, text):
        yield _stripped(text[pos:match.start()], start + pos)
        pos = match.end()
    yield _stripped(text[pos:], start + pos)


def _stripped(piece: str, pos: int) -> tuple[str, int]:
    lead = len(piece) - len(piece.lstrip())
    return piece.strip(), pos + lead


def _number(token: str, pos: int) -> float | None:
    if not _NUMBER.match(token):
        return None
    return float(token)


def _looks_like_name(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z_][A-Za-z0-9_.+\-]*$", text)) and text.upper() not in ("A", "B", "R", "U")
