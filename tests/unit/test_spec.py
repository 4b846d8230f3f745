"""The block-weight grammar against A1111 lora-block-weight's own tables, presets and semantics."""

from __future__ import annotations

import math
import re

import keysets
import pytest
from a1111 import ID17, ID26
from a1111 import PRESETS as A1111_PRESETS
from a1111 import to26 as a1111_to26
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_table import ERRORS, SPECS, USER_PRESETS
from spec_table import spec as S

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
    weights = parse(S(f"vector_{family}_{length}"), block_map)
    check_a1111(weights, block_map, a1111_to26(values))
    assert f"{length} values read as A1111" in weights.summary()


def test_base_scales_every_text_encoder(sdxl):
    weights = parse(S("base_on_sdxl"), sdxl)
    for key in keysets.clip_keys("clip_l", "clip_g"):
        assert weights.ratio(key) == 0.25


def test_fluxall_and_the_61_58_57_layouts(flux):
    assert parse(S("fluxall"), flux).is_uniform
    w = parse(S("flux_61"), flux)
    assert w.by_block["TE1"] == 0.1 and w.by_block["TE2"] == 0.2  # CLIP, T5
    assert w.by_block["EMB"] == 0.3 and w.by_block["FINAL"] == 0.6  # IN, OUT
    assert w.by_block["D18"] == 0.4 and w.by_block["S00"] == 0.5
    w58 = parse(S("flux_58"), flux)
    assert w58.by_block["TE1"] == w58.by_block["TE2"] == 0.7 and w58.by_block["EMB"] == 1.0
    w57 = parse(S("flux_57"), flux)
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
    w = parse(S("named_sd1"), sd1)
    assert w.by_block["IN04"] == w.by_block["IN05"] == 0 and w.by_block["IN06"] == 1
    assert all(w.by_block[f"OUT{i:02d}"] == 0.5 for i in range(12))
    assert w.by_block["BASE"] == 0.25 and w.by_block["M00"] == 1 and w.by_block["FINAL"] == 1
    w = parse(S("named_flux"), flux)
    assert [w.by_block[f"D{i:02d}"] for i in range(7)] == [0.5] * 6 + [1.0]
    assert all(w.by_block[f"S{i:02d}"] == 0.3 for i in range(38))
    w = parse(S("default_first"), sd1)
    assert w.by_block["M00"] == 1 and sum(w.by_block.values()) == 1


def test_default_applies_first_whatever_its_place(sd1):
    assert parse(S("default_last"), sd1).by_block == parse(S("default_first"), sd1).by_block


def test_ranges_run_in_network_order_across_the_middle(sd1):
    w = parse(S("range_across_middle"), sd1)
    assert {b for b, v in w.by_block.items() if v == 0} == {"IN08", "IN09", "IN10", "IN11", "M00", "OUT00", "OUT01"}
    assert parse(S("range_reversed"), sd1).by_block == w.by_block  # either direction, as A1111's hyphener


def test_not_and_space_separated_lists(sd1):
    w = parse(S("not_list"), sd1)
    assert {b for b, v in w.by_block.items() if v == 1} == {"IN04", "OUT05", "M00"}


def test_aliases(sd1, sdxl, flux):
    assert parse(S("alias_mid"), sd1).by_block["M00"] == 0
    w = parse(S("alias_te"), sdxl)
    assert w.by_block["TE1"] == w.by_block["TE2"] == 0
    assert parse(S("alias_clip_g"), sdxl).by_block["TE2"] == 0.5
    w = parse(S("aliases_flux"), flux)
    assert w.by_block["TE2"] == 0 and w.by_block["TE1"] == 1 and w.by_block["D07"] == 0.5
    assert w.by_block["EMB"] == 0.2 and w.by_block["FINAL"] == 0.1 and w.by_block["S00"] == 1


def test_case_insensitive_ids_and_presets(sd1):
    assert parse(S("lower_case"), sd1).by_block["IN04"] == 0
    assert parse(S("preset_lower_case"), sd1).by_block == parse(S("preset"), sd1).by_block


def test_variables_and_halves(sd1):
    w = parse(S("variables"), sd1)
    assert (w.by_block["IN04"], w.by_block["IN05"], w.by_block["OUT03"], w.by_block["OUT04"]) == (0.6, 0.3, 0.2, 0.1)
    assert parse("IN04=A", sd1, a=2.5).by_block["IN04"] == 2.5
    assert parse(S("variables_in_vector"), sd1, a=0.3, b=0.7).by_block["OUT11"] == 0.7


def test_random_values_are_seeded_and_in_their_documented_ranges(sd1):
    text = S("random")
    first, again = parse(text, sd1, seed=7), parse(text, sd1, seed=7)
    assert first.by_block == again.by_block
    assert first.by_block != parse(text, sd1, seed=8).by_block
    assert parse(S("random_seeded"), sd1).by_block == first.by_block
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
    w = parse(S("elemental"), sd1)
    assert w.ratio(attn2) == pytest.approx(0.4) and w.ratio(attn1) == 0.8
    w = parse(S("elemental_not_replace"), sd1)  # A1111 lbwe: replace, everything but attn/proj
    assert w.ratio(proj) == 1.0
    assert w.ratio("diffusion_model.output_blocks.5.0.in_layers.2.weight") == 0.2
    w = parse(S("elemental_everything"), sd1)
    assert all(w.ratio(k) == 0 for k in keysets.sd1())


def test_elemental_last_match_wins(sd1):
    key = "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    assert parse(S("elemental_last_wins"), sd1).ratio(key) == 0.25
    assert parse(S("elemental_first_loses"), sd1).ratio(key) == 0.5


def test_elemental_on_fused_flux_weights(flux):
    qkv = "diffusion_model.double_blocks.3.img_attn.qkv.weight"
    linear1 = "diffusion_model.single_blocks.5.linear1.weight"
    w = parse(S("elemental_fused"), flux)
    assert [w.ratio(qkv, (0, i * 8, 8)) for i in range(3)] == [0.0, 1.0, 1.0]
    assert w.ratio(linear1, (0, 0, 24)) == 1.0 and w.ratio(linear1, (0, 24, 32)) == 0.5
    assert w.ratio("diffusion_model.double_blocks.0.txt_mlp.0.weight") == 0.3
    assert w.row_slices(qkv) == [((0, 0, 8), 0.0), ((0, 8, 8), 1.0), ((0, 16, 8), 1.0)]
    assert w.row_slices(linear1, (0, 0, 24)) is None  # q, k, v share one ratio
    assert w.ratio(qkv) == 1.0 and w.warnings  # one patch over parts that differ: flagged, not guessed


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_errors_name_the_problem_and_place(sd1, text, message):
    with pytest.raises(SpecError, match=message) as raised:
        parse(text, sd1)
    where = re.match(r"character (\d+):", str(raised.value))
    assert raised.value.position == (int(where.group(1)) if where else None)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_spec_of_the_table_reads_on_its_model(request, name):
    family, text = SPECS[name]
    block_map = request.getfixturevalue(family)
    weights = parse(text, block_map, presets=USER_PRESETS)
    assert all(math.isfinite(weights.ratio(key)) for key in block_map._by_key)
    assert weights.summary()


def test_exponents(sd1):
    w = parse(S("exponents"), sd1)
    assert (w.by_block["IN04"], w.by_block["OUT05"], w.by_block["M00"]) == (0.5, 1.5, -0.25)


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
    w = parse(S("user_preset"), sd1, presets=USER_PRESETS)
    assert w.by_block["OUT04"] == 1 and w.by_block["IN04"] == 0.5 and w.by_block["IN05"] == 0


def test_empty_spec_is_uniform(sd1):
    assert parse(S("empty"), sd1).is_uniform and parse(None, sd1).is_uniform and parse(S("blank"), sd1).is_uniform
    assert not parse(S("one_assignment"), sd1).is_uniform


def test_single_number_sets_every_slot(sd1):
    assert set(parse(S("single_number"), sd1).by_block.values()) == {0.5}


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
    mine = USER_PRESETS
    assert parse(S("user_preset_variables"), sd1, presets=mine).by_block["OUT03"] == 0.3
    assert parse(S("spec_variables_win"), sd1, presets=mine).by_block["OUT03"] == 0.9
    assert parse(S("user_preset_seed"), sd1, presets=mine).by_block == parse(S("seeded_like_the_preset"), sd1).by_block


def test_inspire_labelled_vectors(sd1):
    assert parse(S("inspire_label"), sd1).by_block == parse(S("preset"), sd1).by_block
    with pytest.raises(SpecError, match="character 8: 'x' is not a value"):
        parse("LABEL: x,1", sd1)
