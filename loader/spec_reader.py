"""Reading a block-weight spec (the grammar in loader/spec.py): statements, targets, values, in text order."""

from __future__ import annotations

import fnmatch
import math
import random
import re
from dataclasses import dataclass

from .blocks import BlockMap
from .blocks import compress_ids as _compress
from .presets import A1111_PRESETS
from .spec import (
    MAX_ABS_VALUE,
    MAX_ITEMS,
    MAX_STATEMENTS,
    RANDOM_RANGES,
    BlockWeights,
    ElementRule,
    SpecError,
    _family_name,
    _lengths_text,
    positional_layouts,
)

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")
_VARIABLES = ("A", "B", "SEED")


@dataclass
class _Statement:
    text: str
    pos: int  # 0-based character offset in the spec


class Reader:
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
