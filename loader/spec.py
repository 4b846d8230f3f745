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

import re
from dataclasses import dataclass, field

from .blocks import BASE, EMB, FINAL, BlockMap, same_kind
from .blocks import compress_ids as _compress

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
    from .spec_reader import Reader  # the reader builds this module's BlockWeights

    reader = Reader(block_map, presets or {}, a, b, seed, check_elements)
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
