"""Canonical block ids of a live model: which network block each model weight belongs to.

Blocks come from the model's own keys, never from the LoRA, so a LoRA that lacks some blocks never
shifts the meaning of a block-weight vector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TEXT_ENCODER_BLOCK = "BASE"

_UNET_PATTERNS = (
    (re.compile(r"^diffusion_model\.input_blocks\.(\d+)\."), "IN{:02d}"),
    (re.compile(r"^diffusion_model\.middle_block\."), "M00"),
    (re.compile(r"^diffusion_model\.output_blocks\.(\d+)\."), "OUT{:02d}"),
)


@dataclass(frozen=True)
class BlockMap:
    """Block ids of one model, in network order, and the block of each of its weights."""

    architecture: str
    ids: tuple[str, ...]
    _by_key: dict[str, str]

    @classmethod
    def from_keys(cls, architecture: str, unet_keys: list[str], clip_keys: list[str]) -> BlockMap:
        by_key: dict[str, str] = {}
        for key in unet_keys:
            block = _unet_block(key)
            if block is not None:
                by_key[key] = block
        for key in clip_keys:
            by_key[key] = TEXT_ENCODER_BLOCK
        order = [TEXT_ENCODER_BLOCK] if clip_keys else []
        order += sorted({b for b in by_key.values() if b != TEXT_ENCODER_BLOCK}, key=_network_order)
        return cls(architecture, tuple(order), by_key)

    def block_of(self, model_key: str) -> str | None:
        return self._by_key.get(model_key)


def _unet_block(key: str) -> str | None:
    for pattern, fmt in _UNET_PATTERNS:
        match = pattern.match(key)
        if match:
            return fmt.format(*(int(g) for g in match.groups()))
    return None


def _network_order(block: str) -> tuple[int, int]:
    rank = {"IN": 0, "M": 1, "OUT": 2}
    prefix = block.rstrip("0123456789")
    return rank.get(prefix, 3), int(block[len(prefix):] or 0)
