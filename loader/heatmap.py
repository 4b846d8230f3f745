"""A picture of where a LoRA acts, laid out in the network's shape, drawn with torch alone.

UNets are drawn as their U: input blocks step down level by level on the left, the middle block sits at
the bottom, output blocks climb back up on the right. Transformers get one row per block chain (Flux: a
row of double blocks, then the single blocks), wrapped every 20 cells. The top row holds the text
encoders and the non-block groups. A cell's colour is its block's ‖ΔW‖ relative to the strongest block
(dark = weak, yellow = strong, grey = untouched); the white bar under it is the block ratio (orange above
1, red below 0). Output: float32 H×W×3 in [0, 1].
"""

from __future__ import annotations

import math

import torch

from .blocks import BlockMap
from .energy import EnergyTable

CELL_W, CELL_H, GAP = 44, 30, 4
SCALE = 2  # font pixels per glyph pixel
PER_ROW = 20
BACKGROUND = (0.11, 0.11, 0.13)
UNTOUCHED = (0.32, 0.32, 0.34)
ANCHORS = ((0.267, 0.005, 0.329), (0.229, 0.322, 0.546), (0.128, 0.567, 0.551), (0.369, 0.789, 0.383),
           (0.993, 0.906, 0.144))

_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001010010",
    "8": "111101111101111", "9": "111101111001111", "A": "010101111101101", "B": "110101110101110",
    "C": "011100100100011", "D": "110101101101110", "E": "111100110100111", "F": "111100110100100",
    "G": "011100101101011", "H": "101101111101101", "I": "111010010010111", "J": "001001001101010",
    "K": "101101110101101", "L": "100100100100111", "M": "101111111101101", "N": "110101101101101",
    "O": "010101101101010", "P": "110101110100100", "Q": "010101101110011", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "U": "101101101101111", "V": "101101101101010",
    "W": "101101111111101", "X": "101101010101101", "Y": "101101010010010", "Z": "111001010100111",
    ".": "000000000000010", "-": "000000111000000", "%": "101001010100101", "_": "000000000000111",
    ":": "000010000010000", " ": "000000000000000", "=": "000111000111000", "/": "001001010100100",
}


def colour(t: float) -> tuple[float, float, float]:
    """A viridis-like ramp: 0 dark violet → 1 yellow."""
    t = min(max(t, 0.0), 1.0) * (len(ANCHORS) - 1)
    i = min(int(t), len(ANCHORS) - 2)
    f = t - i
    a, b = ANCHORS[i], ANCHORS[i + 1]
    return tuple(a[k] + (b[k] - a[k]) * f for k in range(3))


def text_width(text: str) -> int:
    return len(text) * 4 * SCALE - SCALE if text else 0


def draw_text(image: torch.Tensor, text: str, x: int, y: int, rgb=(1.0, 1.0, 1.0)) -> None:
    """Draw upper-case text with the built-in 3×5 font; characters it lacks are drawn as blanks."""
    value = torch.tensor(rgb, dtype=image.dtype)
    for n, ch in enumerate(text.upper()):
        glyph = _GLYPHS.get(ch, _GLYPHS[" "])
        for gy in range(5):
            for gx in range(3):
                if glyph[gy * 3 + gx] == "1":
                    px, py = x + (n * 4 + gx) * SCALE, y + gy * SCALE
                    _fill(image, px, py, SCALE, SCALE, value)


def _fill(image: torch.Tensor, x: int, y: int, w: int, h: int, value) -> None:
    height, width = image.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 > x0 and y1 > y0:
        image[y0:y1, x0:x1] = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=image.dtype)


def layout(block_map: BlockMap) -> list[tuple[str, int, int]]:
    """(slot, row, column) of every cell; row 0 holds text encoders and non-block groups."""
    cells = [(slot, 0, col) for col, slot in enumerate(s for s in block_map.ids if s not in block_map.blocks)]
    chains = block_map.chains
    if block_map.family in ("sd1", "sdxl", "unet"):
        ins, mids, outs = (chains.get(n, ()) for n in ("input_blocks", "middle_block", "output_blocks"))
        per_level = 3
        bottom = max(1, math.ceil(len(ins) / per_level))
        for i, slot in enumerate(ins):
            cells.append((slot, 1 + i // per_level, i))
        for m, slot in enumerate(mids):
            cells.append((slot, 1 + bottom, len(ins) + m))
        for j, slot in enumerate(outs):
            level = (len(outs) - 1 - j) // per_level
            cells.append((slot, 1 + level, len(ins) + len(mids) + j))
        return cells
    row = 1
    for ids in chains.values():
        for n, slot in enumerate(ids):
            cells.append((slot, row + n // PER_ROW, n % PER_ROW))
        row += math.ceil(len(ids) / PER_ROW)
    return cells


def render(energy: EnergyTable, title: str = "") -> torch.Tensor:
    cells = layout(energy.block_map)
    rows = max(r for _, r, _ in cells) + 1
    cols = max(c for _, _, c in cells) + 1
    top = 8 + (5 * SCALE + 8 if title else 0)
    legend = 5 * SCALE + 20
    width = max(GAP + cols * (CELL_W + GAP), 520)
    height = top + rows * (CELL_H + GAP) + legend
    image = torch.empty(height, width, 3, dtype=torch.float32)
    image[:] = torch.tensor(BACKGROUND)
    if title:
        draw_text(image, title[: max(1, (width - 16) // (4 * SCALE))], 8, 8)
    strongest = max((r.norm for r in energy.rows.values()), default=0.0)
    for slot, row, col in cells:
        x, y = GAP + col * (CELL_W + GAP), top + row * (CELL_H + GAP)
        block = energy.rows[slot]
        fill = UNTOUCHED if block.keys == 0 or strongest == 0 else colour(block.norm / strongest)
        _fill(image, x, y, CELL_W, CELL_H, fill)
        luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
        ink = (0.0, 0.0, 0.0) if luminance > 0.55 else (1.0, 1.0, 1.0)
        label = slot[:5]
        draw_text(image, label, x + (CELL_W - text_width(label)) // 2, y + 5, ink)
        _ratio_bar(image, x, y + CELL_H - 6, block.ratio)
    _legend(image, 8, height - legend + 6, width - 16)
    return image.clamp_(0.0, 1.0)


def _ratio_bar(image: torch.Tensor, x: int, y: int, ratio: float) -> None:
    _fill(image, x + 2, y, CELL_W - 4, 4, (0.05, 0.05, 0.05))
    if ratio == 0:
        return
    rgb = (1.0, 1.0, 1.0) if 0 < ratio <= 1 else ((1.0, 0.55, 0.1) if ratio > 1 else (0.95, 0.2, 0.2))
    length = max(1, round((CELL_W - 4) * min(abs(ratio), 1.0)))
    _fill(image, x + 2, y, length, 4, rgb)


def _legend(image: torch.Tensor, x: int, y: int, width: int) -> None:
    draw_text(image, "0", x, y)
    bar_x, bar_w = x + 4 * SCALE + 4, min(200, width - 80)
    for i in range(bar_w):
        _fill(image, bar_x + i, y, 1, 5 * SCALE, colour(i / max(bar_w - 1, 1)))
    draw_text(image, "MAX  NORM OF DW", bar_x + bar_w + 6, y)
    label_x = bar_x + bar_w + 6 + text_width("MAX  NORM OF DW") + 24
    _fill(image, label_x, y + 3, 24, 4, (1.0, 1.0, 1.0))
    draw_text(image, "BLOCK RATIO", label_x + 30, y)
