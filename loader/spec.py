"""The block-weight grammar: a spec string becomes a ratio for every model weight.

This first version knows the empty spec (every block 1.0) and named assignments `ID=value`
separated by commas; the full A1111-compatible grammar builds on the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass

from .blocks import BlockMap


class SpecError(ValueError):
    """A block-weight spec that cannot be read; the message says what was expected."""


@dataclass(frozen=True)
class BlockWeights:
    block_map: BlockMap
    by_block: dict[str, float]
    default: float = 1.0

    def ratio(self, model_key: str, offset: tuple[int, int, int] | None = None) -> float:
        """The multiplier for one model weight (or the row slice `offset` of a fused weight)."""
        block = self.block_map.block_of(model_key)
        return self.by_block.get(block, self.default) if block is not None else self.default

    @property
    def is_uniform(self) -> bool:
        return all(v == self.default for v in self.by_block.values()) and self.default == 1.0


def parse(text: str, block_map: BlockMap) -> BlockWeights:
    text = (text or "").strip()
    by_block: dict[str, float] = {}
    if not text:
        return BlockWeights(block_map, by_block)
    for position, item in enumerate(text.split(","), start=1):
        name, sep, value = item.partition("=")
        name = name.strip().upper()
        if not sep:
            raise SpecError(f"item {position} ({item.strip()!r}) should look like ID=value")
        if name not in block_map.ids:
            raise SpecError(f"unknown block id {name!r}; this {block_map.architecture} model has "
                            f"{', '.join(block_map.ids)}")
        try:
            by_block[name] = float(value)
        except ValueError:
            raise SpecError(f"item {position}: {value.strip()!r} is not a number") from None
    return BlockWeights(block_map, by_block)
