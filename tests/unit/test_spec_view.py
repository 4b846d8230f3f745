"""What the block editor is told about a spec: the grammar's own reading on the editor's stand-in maps."""

from __future__ import annotations

import keysets
import pytest
from spec_table import ERRORS, SPECS, USER_PRESETS

from loader import spec, spec_view
from loader.blocks import BlockMap

# Key sets with the real block structure (tests/keysets.py), read as the patching code reads a live model;
# named like the stand-in so that messages compare whole.
LIVE_LIKE = {
    "sd1": lambda: BlockMap.from_keys(spec_view.LAYOUTS["sd1"].label, keysets.sd1(), keysets.clip_keys("clip_l")),
    "sdxl": lambda: BlockMap.from_keys(spec_view.LAYOUTS["sdxl"].label, keysets.sdxl(),
                                       keysets.clip_keys("clip_l", "clip_g")),
    "flux": lambda: BlockMap.from_keys(spec_view.LAYOUTS["flux"].label, keysets.flux(),
                                       keysets.clip_keys("clip_l", "t5xxl")),
}


@pytest.mark.parametrize("layout", sorted(spec_view.LAYOUTS))
def test_stand_in_maps_have_the_ids_aliases_and_vectors_of_the_model(layout):
    stand_in, live = spec_view.layout_map(layout), LIVE_LIKE[layout]()
    assert stand_in.ids == live.ids and stand_in.family == live.family
    assert stand_in.aliases == live.aliases and stand_in.text_encoders == live.text_encoders
    assert sorted(spec.positional_layouts(stand_in)) == sorted(spec.positional_layouts(live))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_table_spec_reads_in_the_editor_as_on_the_model(name):
    family, text = SPECS[name]
    answer = spec_view.reading(text, spec_view.layout_map(family), USER_PRESETS)
    assert answer["error"] is None, answer
    weights = spec.parse(text, LIVE_LIKE[family](), presets=USER_PRESETS)
    assert answer["ratios"] == {slot: weights.by_block.get(slot, weights.default) for slot in weights.block_map.ids}
    assert answer["default"] == weights.default
    assert answer["rules"] == weights.rule_texts()
    assert answer["sliders"] == (not weights.rules and all(-1 <= v <= 2 for v in answer["ratios"].values()))


def test_what_sliders_cannot_hold_is_named():
    sd1 = spec_view.layout_map("sd1")
    assert spec_view.reading(SPECS["named_sd1"][1], sd1)["sliders"]
    answer = spec_view.reading(SPECS["elemental"][1], sd1)
    assert not answer["sliders"] and answer["not_sliders"] == "1 element rule"
    answer = spec_view.reading(SPECS["beyond_the_sliders"][1], sd1)
    assert not answer["sliders"] and answer["not_sliders"] == "IN04, OUT05 outside the sliders' -1…2"


@pytest.mark.parametrize(("text", "message"), [e for e in ERRORS if "element" not in e[1]])
def test_errors_come_with_their_position(text, message):
    answer = spec_view.reading(text, spec_view.layout_map("sd1"))
    assert message in answer["error"]
    try:
        spec.parse(text, LIVE_LIKE["sd1"]())
    except spec.SpecError as e:
        assert (answer["error"], answer["position"]) == (str(e), e.position)


def test_element_names_wait_for_the_model():
    # The stand-in map has no weight names: an element the model lacks is refused when the workflow runs.
    assert spec_view.reading("@IN04:atn1:0", spec_view.layout_map("sd1"))["error"] is None
    with pytest.raises(spec.SpecError, match="matches no weight"):
        spec.parse("@IN04:atn1:0", LIVE_LIKE["sd1"]())


@pytest.mark.parametrize("layout", sorted(spec_view.LAYOUTS))
def test_offered_presets_read_on_their_layout(layout):
    block_map = spec_view.layout_map(layout)
    offered = spec_view.offered_presets(block_map, {"MINE": "IN04=0"})
    names = [p["name"] for p in offered]
    assert names[-1] == "user:MINE" and "ALL" in names and "NOTE" in names
    for preset in offered[:-1]:
        assert spec_view.reading(preset["spec"], block_map)["error"] is None, preset
    if layout == "flux":
        assert {"DOUBLE", "SINGLE", "FLUXALL"} <= set(names) and "MIDD" not in names and "IN" not in names
    else:
        assert {"IN", "MID", "OUT", "MIDD", "OUTALL"} <= set(names) and "DOUBLE" not in names


def test_editor_answer_picks_the_layout_of_the_loras_base():
    sd3, _ = spec_view.block_guess.guess_from_lora([f"lora_unet_joint_blocks_{i}_x_block_attn_qkv" for i in (0, 5, 11)],
                                              "sd3")
    answer = spec_view.editor_answer("J05=0", None, ("sd3", sd3), {})
    assert answer["layout"] == "lora" and answer["kind"] == "chains"
    assert answer["chains"] == [["Joint blocks", [f"J{i:02d}" for i in range(12)]]]
    assert answer["ratios"]["J05"] == 0 and answer["layouts"][-1]["key"] == "lora"
    assert spec_view.editor_answer("", None, ("sdxl", sd3), {})["layout"] == "sdxl"
    assert spec_view.editor_answer("", "flux", ("sdxl", sd3), {})["layout"] == "flux"
    assert spec_view.editor_answer("", None, None, {})["layout"] == "sd1"
