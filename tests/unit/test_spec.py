"""The block-weight grammar against A1111 lora-block-weight's own tables, presets and semantics."""

from __future__ import annotations

import math

import keysets
import pytest
from a1111 import ID17, ID26
from a1111 import PRESETS as A1111_PRESETS
from a1111 import to26 as a1111_to26
from hypothesis import given, settings
from hypothesis import strategies as st

from loader import spec
from loader.blocks import BlockMap
from loader.spec import SpecError, parse


@pytest.fixture(scope="module")
def sd1():
    return BlockMap.from_keys("SD15", keysets.sd1(), keysets.clip_keys("clip_l"))


@pytest.fixture(scope="module")
def sdxl():
    return BlockMap.from_keys("SDXL", keysets.sdxl(), keysets.clip_keys("clip_l", "clip_g"))


@pytest.fixture(scope="module")
def flux():
    return BlockMap.from_keys("Flux", keysets.flux(), keysets.clip_keys("clip_l", "t5xxl"))


def ratios_by_block(weights, block_map) -> dict[str, float]:
    """The ratio the patching code gets for one real key of every block."""
    seen: dict[str, float] = {}
    for key, block in block_map._by_key.items():
        seen.setdefault(block, weights.ratio(key))
    return seen


def check_a1111(weights, block_map, expected26: dict[str, float]) -> None:
    got = ratios_by_block(weights, block_map)
    for block, ratio in got.items():
        if block in ("EMB", "FINAL"):
            assert ratio == 1.0, block  # A1111 leaves keys outside its block list at 1
        elif block in block_map.text_encoders:
            assert ratio == expected26["BASE"], block
        else:
            assert ratio == expected26[block], block


@pytest.mark.parametrize("name", sorted(A1111_PRESETS))
def test_every_a1111_preset_on_sd1_is_exact(sd1, name):
    check_a1111(parse(name, sd1), sd1, a1111_to26(A1111_PRESETS[name]))


@pytest.mark.parametrize("name", sorted(A1111_PRESETS))
def test_every_a1111_preset_on_sdxl_reads_ids_like_a1111(sdxl, name):
    check_a1111(parse(name, sdxl), sdxl, a1111_to26(A1111_PRESETS[name]))


def test_builtin_preset_strings_are_a1111s():
    from loader.presets import A1111_PRESETS as BUILTIN

    for name, values in A1111_PRESETS.items():
        assert [float(v) for v in BUILTIN[name].split(",")] == values
    assert BUILTIN["FLUXALL"] == ",".join(["1"] * 61)


@pytest.mark.parametrize("length", [17, 26, 12, 20])
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_positional_vectors_of_every_length(request, family, length):
    block_map = request.getfixturevalue(family)
    values = [round(0.05 * (i + 1), 2) for i in range(length)]
    weights = parse(",".join(map(str, values)), block_map)
    check_a1111(weights, block_map, a1111_to26(values))
    assert f"{length} values read as A1111" in weights.summary()


def test_base_scales_every_text_encoder(sdxl):
    weights = parse("0.25," + ",".join(["1"] * 11), sdxl)
    for key in keysets.clip_keys("clip_l", "clip_g"):
        assert weights.ratio(key) == 0.25


def test_fluxall_and_the_61_58_57_layouts(flux):
    assert parse("FLUXALL", flux).is_uniform
    v61 = [0.1, 0.2, 0.3] + [0.4] * 19 + [0.5] * 38 + [0.6]
    w = parse(",".join(map(str, v61)), flux)
    assert w.by_block["TE1"] == 0.1 and w.by_block["TE2"] == 0.2  # CLIP, T5
    assert w.by_block["EMB"] == 0.3 and w.by_block["FINAL"] == 0.6  # IN, OUT
    assert w.by_block["D18"] == 0.4 and w.by_block["S00"] == 0.5
    w58 = parse(",".join(["0.7"] + ["0.2"] * 19 + ["0.3"] * 38), flux)
    assert w58.by_block["TE1"] == w58.by_block["TE2"] == 0.7 and w58.by_block["EMB"] == 1.0
    w57 = parse(",".join(["0.2"] * 19 + ["0.3"] * 38), flux)
    assert w57.by_block["TE1"] == 1.0 and w57.by_block["D00"] == 0.2 and w57.by_block["S37"] == 0.3


def test_wrong_length_says_what_is_expected(sd1, sdxl, flux):
    with pytest.raises(SpecError, match=r"15 values, but a SD15 model reads 17 or 26 values \(A1111 also reads 12"):
        parse(",".join(["1"] * 15), sd1)
    with pytest.raises(SpecError, match="reads 12 or 20 values"):
        parse(",".join(["1"] * 13), sdxl)
    with pytest.raises(SpecError, match=r"reads 61 .* or 58 .* or 57"):
        parse("1,1", flux)
    with pytest.raises(SpecError, match="character 1: 18 values"):
        parse(",".join(["1"] * 18), sd1)


def test_a1111_17_preset_is_refused_on_flux(flux):
    with pytest.raises(SpecError, match="17 values"):
        parse("MIDD", flux)


def test_named_assignments_from_the_issue(sd1, flux):
    w = parse("IN04-IN05=0, OUT*=0.5, BASE=0.25", sd1)
    assert w.by_block["IN04"] == w.by_block["IN05"] == 0 and w.by_block["IN06"] == 1
    assert all(w.by_block[f"OUT{i:02d}"] == 0.5 for i in range(12))
    assert w.by_block["BASE"] == 0.25 and w.by_block["M00"] == 1 and w.by_block["FINAL"] == 1
    w = parse("D00-D05=0.5, S*=0.3", flux)
    assert [w.by_block[f"D{i:02d}"] for i in range(7)] == [0.5] * 6 + [1.0]
    assert all(w.by_block[f"S{i:02d}"] == 0.3 for i in range(38))
    w = parse("default=0, M00=1", sd1)
    assert w.by_block["M00"] == 1 and sum(w.by_block.values()) == 1


def test_default_applies_first_whatever_its_place(sd1):
    assert parse("M00=1, default=0", sd1).by_block == parse("default=0, M00=1", sd1).by_block


def test_ranges_run_in_network_order_across_the_middle(sd1):
    w = parse("IN08-OUT01=0", sd1)
    assert {b for b, v in w.by_block.items() if v == 0} == {"IN08", "IN09", "IN10", "IN11", "M00", "OUT00", "OUT01"}
    assert parse("OUT01-IN08=0", sd1).by_block == w.by_block  # either direction, as A1111's hyphener


def test_not_and_space_separated_lists(sd1):
    w = parse("NOT IN04 OUT05 M00=0", sd1)
    assert {b for b, v in w.by_block.items() if v == 1} == {"IN04", "OUT05", "M00"}


def test_aliases(sd1, sdxl, flux):
    assert parse("MID=0", sd1).by_block["M00"] == 0
    w = parse("TE=0", sdxl)
    assert w.by_block["TE1"] == w.by_block["TE2"] == 0
    assert parse("CLIP_G=0.5", sdxl).by_block["TE2"] == 0.5
    w = parse("T5=0, DOUBLE=0.5, IN=0.2, OUT=0.1", flux)
    assert w.by_block["TE2"] == 0 and w.by_block["TE1"] == 1 and w.by_block["D07"] == 0.5
    assert w.by_block["EMB"] == 0.2 and w.by_block["FINAL"] == 0.1 and w.by_block["S00"] == 1


def test_case_insensitive_ids_and_presets(sd1):
    assert parse("in04=0; m00=0.5", sd1).by_block["IN04"] == 0
    assert parse("midd", sd1).by_block == parse("MIDD", sd1).by_block


def test_variables_and_halves(sd1):
    w = parse("A=0.6; B=0.2; IN04=A, IN05=a, OUT03=B, OUT04=b", sd1)
    assert (w.by_block["IN04"], w.by_block["IN05"], w.by_block["OUT03"], w.by_block["OUT04"]) == (0.6, 0.3, 0.2, 0.1)
    assert parse("IN04=A", sd1, a=2.5).by_block["IN04"] == 2.5
    assert parse("A,1,1,1,1,1,1,1,1,1,1,1,B,B,B,B,B", sd1, a=0.3, b=0.7).by_block["OUT11"] == 0.7


def test_random_values_are_seeded_and_in_their_documented_ranges(sd1):
    text = ",".join(["R"] * 8 + ["U"] * 9)
    first, again = parse(text, sd1, seed=7), parse(text, sd1, seed=7)
    assert first.by_block == again.by_block
    assert first.by_block != parse(text, sd1, seed=8).by_block
    assert parse("SEED=7; " + text, sd1).by_block == first.by_block
    for i, block in enumerate(ID17):
        if block == "BASE":
            continue
        value = first.by_block[block]
        lo, hi = (0.0, 1.0) if i < 8 else (-0.5, 1.5)
        assert lo <= value <= hi and round(value, 3) == value


def test_elemental_multiplies_and_replaces(sd1):
    attn2 = "diffusion_model.input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight"
    attn1 = "diffusion_model.input_blocks.5.1.transformer_blocks.0.attn1.to_q.weight"
    proj = "diffusion_model.output_blocks.5.1.proj_in.weight"
    w = parse("IN05=0.8; @IN05-OUT05:attn2:0.5", sd1)
    assert w.ratio(attn2) == pytest.approx(0.4) and w.ratio(attn1) == 0.8
    w = parse("@OUT05:NOT attn proj:=0.2", sd1)  # A1111 lbwe: replace, everything but attn/proj
    assert w.ratio(proj) == 1.0
    assert w.ratio("diffusion_model.output_blocks.5.0.in_layers.2.weight") == 0.2
    w = parse("@::0", sd1)
    assert all(w.ratio(k) == 0 for k in keysets.sd1())


def test_elemental_last_match_wins(sd1):
    key = "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    assert parse("@IN04:attn:0.5; @IN04:attn1:0.25", sd1).ratio(key) == 0.25
    assert parse("@IN04:attn1:0.25; @IN04:attn:0.5", sd1).ratio(key) == 0.5


def test_elemental_on_fused_flux_weights(flux):
    qkv = "diffusion_model.double_blocks.3.img_attn.qkv.weight"
    linear1 = "diffusion_model.single_blocks.5.linear1.weight"
    w = parse("@D*:img_attn.qkv.q:0; @S*:linear1.mlp:0.5; @DOUBLE:txt_mlp:0.3", flux)
    assert [w.ratio(qkv, (0, i * 8, 8)) for i in range(3)] == [0.0, 1.0, 1.0]
    assert w.ratio(linear1, (0, 0, 24)) == 1.0 and w.ratio(linear1, (0, 24, 32)) == 0.5
    assert w.ratio("diffusion_model.double_blocks.0.txt_mlp.0.weight") == 0.3
    assert w.row_slices(qkv) == [((0, 0, 8), 0.0), ((0, 8, 8), 1.0), ((0, 16, 8), 1.0)]
    assert w.row_slices(linear1, (0, 0, 24)) is None  # q, k, v share one ratio
    assert w.ratio(qkv) == 1.0 and w.warnings  # one patch over parts that differ: flagged, not guessed


@pytest.mark.parametrize(("text", "message"), [
    ("IN99=1", "unknown block id 'IN99'"),
    ("IN04=1, XX=2", "character 9: unknown block id 'XX'"),
    ("FOO", "'FOO' is not a preset"),
    ("IN04=x", "character 6: 'x' is not a value"),
    ("1,,1", "character 3"),
    ("IN04=nan", "not a value"),
    ("IN04=1e9", "outside"),
    ("IN04", "not a preset"),
    ("IN04=1, 0.5", "should look like TARGET=value"),
    ("@IN04:attn", "@BLOCKS:ELEMENTS:value"),
    ("@IN04:atn1:0", "element 'atn1' matches no weight"),
    ("NOT=0", "NOT needs a block"),
    ("Q*=1", "matches no block"),
    ("IN04-OUT=1", "single block ids at both ends"),
    ("A=x; IN04=A", "A must be set to a number"),
    ("IN04=\x00", "control character"),
])
def test_errors_name_the_problem_and_place(sd1, text, message):
    with pytest.raises(SpecError, match=message):
        parse(text, sd1)


def test_huge_specs_fail_fast(sd1):
    with pytest.raises(SpecError, match="limit"):
        parse("1," * 20_000, sd1)
    with pytest.raises(SpecError, match="statements"):
        parse(";".join(["IN04=1"] * 600), sd1)
    with pytest.raises(SpecError, match="more than"):
        parse(", ".join(["IN04=1"] * 2500)[:19_999], sd1)


def test_presets_cannot_nest(sd1):
    with pytest.raises(SpecError, match="cannot nest"):
        parse("MINE", sd1, presets={"MINE": "MIDD"})


def test_user_presets_are_specs(sd1):
    w = parse("FACE; IN04=0.5", sd1, presets={"FACE": "default=0; OUT03-OUT05=1; BASE=1"})
    assert w.by_block["OUT04"] == 1 and w.by_block["IN04"] == 0.5 and w.by_block["IN05"] == 0


def test_empty_spec_is_uniform(sd1):
    assert parse("", sd1).is_uniform and parse(None, sd1).is_uniform and parse("  ;\n ", sd1).is_uniform
    assert not parse("IN04=0.5", sd1).is_uniform


def test_single_number_sets_every_slot(sd1):
    assert set(parse("0.5", sd1).by_block.values()) == {0.5}


_ALPHABET = "IN0O1UT-*=,;@: .AMDSBRx5\n"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=80))
def test_garbage_gives_a_spec_error_or_finite_ratios(text):
    block_map = BlockMap.from_keys("SD15", keysets.sd1(), keysets.clip_keys("clip_l"))
    try:
        weights = parse(text, block_map)
    except SpecError:
        return
    for key in keysets.sd1():
        assert math.isfinite(weights.ratio(key))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False).map(lambda v: round(v, 3)), min_size=26, max_size=26))
def test_any_26_vector_round_trips(values):
    block_map = BlockMap.from_keys("SD15", keysets.sd1(), keysets.clip_keys("clip_l"))
    weights = parse(",".join(repr(v) for v in values), block_map)
    assert [weights.by_block[b] for b in ID26] == values


def test_layouts_are_listed_for_every_family(sd1, flux):
    assert sorted(spec.positional_layouts(sd1)) == [12, 17, 20, 26]
    assert sorted(spec.positional_layouts(flux)) == [57, 58, 61]
    wan = BlockMap.from_keys("WAN21_T2V", keysets.chains("blocks", 30), keysets.clip_keys("umt5xxl"))
    assert sorted(spec.positional_layouts(wan)) == [30, 31]


def test_presets_may_set_variables_but_the_spec_wins(sd1):
    mine = {"AOUT": "A=0.3; OUT*=A", "RND": "SEED=5; IN04=R"}
    assert parse("AOUT", sd1, presets=mine).by_block["OUT03"] == 0.3
    assert parse("A=0.9; AOUT", sd1, presets=mine).by_block["OUT03"] == 0.9
    assert parse("RND", sd1, presets=mine).by_block == parse("SEED=5; IN04=R", sd1).by_block


def test_inspire_labelled_vectors(sd1):
    assert parse("MYFACE:" + ",".join(map(str, A1111_PRESETS["MIDD"])), sd1).by_block == parse("MIDD", sd1).by_block
    with pytest.raises(SpecError, match="character 8: 'x' is not a value"):
        parse("LABEL: x,1", sd1)
