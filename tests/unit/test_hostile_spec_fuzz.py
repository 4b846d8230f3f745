"""Fuzzing the block-weight grammar: any text either parses to finite ratios or raises SpecError, quickly,
with a message of bounded length (a workflow can carry megabytes of spec text).

Runs over the block maps of SD1, SDXL and Flux (real block structure, from tests/keysets.py), so
positional vectors, ranges, globs, group aliases and elemental directives on fused rows all get hit.
"""

from __future__ import annotations

import math
import time

import keysets
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loader import spec
from loader.blocks import BlockMap

MAPS = {
    "SD15": BlockMap.from_keys("SD15", keysets.sd1(), keysets.clip_keys("clip_l")),
    "SDXL": BlockMap.from_keys("SDXL", keysets.sdxl(), keysets.clip_keys("clip_l", "clip_g")),
    "Flux": BlockMap.from_keys("Flux", keysets.flux(), keysets.clip_keys("clip_l", "t5xxl")),
}
KEYS = {
    "SD15": keysets.sd1() + keysets.clip_keys("clip_l"),
    "SDXL": keysets.sdxl() + keysets.clip_keys("clip_l", "clip_g"),
    "Flux": list(keysets.flux()) + keysets.clip_keys("clip_l", "t5xxl"),
}
MAX_MESSAGE = 600
MAX_SECONDS = 2.0

TOKENS = st.sampled_from([
    "IN04", "IN05", "IN00", "OUT*", "OUT11", "M00", "MID", "IN", "OUT", "D00", "D18", "S*", "S37", "DOUBLE",
    "SINGLE", "BASE", "TE", "CLIP", "T5", "ALLBLOCKS", "NOT", "ALL", "NONE", "INS", "IND", "INALL", "MIDD",
    "OUTD", "OUTS", "OUTALL", "ALL0.5", "FLUXALL", "R", "U", "A", "B", "a", "b", "SEED", "default",
    "attn1", "attn2", "ff", "proj", "img_attn", "txt_mlp", "qkv.q", "linear1.mlp",
    "=", ",", ";", "\n", "-", "+", "*", "?", "@", ":", " ", "(", ")", "[", "]", "{", "}", "'", '"',
    "0", "1", "0.5", "-1", "1e3", "1e308", "1e309", "nan", "NaN", "inf", "-inf", "1" * 400, ".", "e",
    "\x00", "\t", "\u00a0", "１",
])
SPEC_TEXT = st.lists(TOKENS, max_size=40).map("".join) | st.text(max_size=200)
VECTOR = st.lists(st.sampled_from(["0", "1", "0.5", "-0.25", "R", "U", "A", "b", "", "x", "1e2", "101"]),
                  min_size=1, max_size=70).map(",".join)


def check(text: str, family: str = "SD15") -> None:
    started = time.perf_counter()
    try:
        weights = spec.parse(text, MAPS[family])
    except spec.SpecError as e:
        assert len(str(e)) <= MAX_MESSAGE, f"a {len(str(e))}-character message"
        assert "Traceback" not in str(e)
        return
    finally:
        assert time.perf_counter() - started < MAX_SECONDS
    for key in KEYS[family]:
        ratio = weights.ratio(key)
        assert isinstance(ratio, float) and math.isfinite(ratio), (text, key, ratio)
    if family == "Flux":  # the row slices of fused weights (q/k/v of qkv, attention/MLP of linear1)
        for key, shape in keysets.flux().items():
            for offset in [None, (0, 0, shape[0] // 3), (0, shape[0] // 3, shape[0] // 3)]:
                assert math.isfinite(weights.ratio(key, offset))
                for _, ratio in weights.row_slices(key, offset) or []:
                    assert math.isfinite(ratio)


@given(SPEC_TEXT, st.sampled_from(list(MAPS)))
def test_fuzz_block_specs(text, family):
    check(text, family)


@given(VECTOR, st.sampled_from(list(MAPS)))
def test_fuzz_positional_vectors(text, family):
    check(text, family)


@pytest.mark.parametrize("family", list(MAPS))
@pytest.mark.parametrize("text", [
    "1," * 100_000 + "1",  # a huge positional vector
    ",".join(["0.5"] * 26 * 1000),
    "(" * 100_000 + ")" * 100_000,  # deeply nested syntax
    "[" * 50_000 + "1" + "]" * 50_000,
    "@" * 100_000,
    "@" + ":" * 10_000 + "1",
    "IN04=" + "9" * 100_000,  # a number longer than Python will convert
    "IN04=nan", "IN04=inf", "IN04=-inf", "IN04=1e309", "OUT*=1e30", "default=1e30", "A=nan; IN04=A",
    "IN04-OUT11=" + "1" * 5000,
    "; ".join(f"IN{i % 12:02d}=0.5" for i in range(100_000)),
    "\x00\x01\x02 garbage \uffff",
    "x" * 5_000_000,  # megabytes of text in a shared workflow
])
def test_hostile_specs(text, family):
    check(text, family)
