"""Row schedules in the browser: the row's indicator, its editor, and a scheduled row on every path rows
travel (save/load, API export/import, copy/paste, subgraphs, undo/redo), on each frontend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import deck
import pytest
from playwright.sync_api import expect

APP = deck.APP
EXAMPLE = Path(__file__).resolve().parents[2] / "example_workflows" / "loradeck_stack.json"

RAMP = {"start": 0.6, "stop": 1, "from": 0, "to": 1, "curve": "linear", "keyframes": 5}
STEPS = {"start": 0, "stop": 12, "unit": "steps", "note": "a key LoRA Deck does not know"}
ROWS = [
    {"on": True, "lora": "alpha_style.safetensors", "strength": 0.8, "clip_strength": None, "blocks": "",
     "schedule": RAMP},
    {"on": True, "lora": "styles/beta_ink.safetensors", "strength": 0.5, "clip_strength": 0.25,
     "blocks": "IN04=0", "schedule": STEPS},
    {"on": True, "lora": "characters/delta_hero.safetensors", "strength": 1, "clip_strength": None, "blocks": ""},
]
PLAIN = {"on": True, "lora": "alpha_style.safetensors", "strength": 1, "clip_strength": None, "blocks": ""}


def stack(page, rows=ROWS, pos=(360, 160)):
    node = deck.add_node(page, "LoraDeckStack", pos)
    deck.set_rows(page, node, rows)
    return node, deck.rows_widget(page, node)


def open_editor(page, widget, index: int):
    row = widget.locator(".ld-row").nth(index)
    row.hover()  # an unscheduled row shows its indicator on hover
    row.locator(".ld-sched").click()
    editor = page.get_by_role("dialog", name="Schedule")
    editor.wait_for()
    return editor


def fill(editor, **fields) -> None:
    for name, value in fields.items():
        control = editor.locator(f".ld-sched-{name}")
        if name in ("unit", "curve"):
            control.select_option(value)
        else:
            control.fill(value)


def apply(page, editor) -> None:
    editor.locator(".ld-sched-apply").click()
    expect(page.get_by_role("dialog", name="Schedule")).to_have_count(0)


def schedules(page, node) -> list:
    return [r.get("schedule", "absent") for r in deck.rows_of(page, node)]


def _stacks(page) -> list[list[dict]]:
    return page.evaluate(f"""() => {APP}.graph.nodes.filter(n => n.type === 'LoraDeckStack')
        .map(n => n.widgets.find(w => w.name === 'rows').value)""")


def _prompt_rows(page) -> list:
    prompt = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
    return [v["inputs"]["rows"] for v in prompt.values() if v["class_type"] == "LoraDeckStack"]


# --- the indicator -----------------------------------------------------------------------------------


def test_indicator_shows_the_range_and_keeps_the_row_height(page, server, docs_dir):
    node, widget = stack(page)
    deck.settle(page, node)
    rows = widget.locator(".ld-row")
    # The bar: the whole sampling, the active range 0.6..1 filled, its top rising from ×0 to ×1 (linear).
    bar = page.evaluate("""(el) => {
        const svg = el.querySelector('.ld-sched-bar'), w = svg.viewBox.baseVal.width, h = svg.viewBox.baseVal.height;
        const pts = svg.querySelector('.ld-sched-range').getAttribute('points').trim().split(' ')
            .map(p => p.split(',').map(Number));
        return {w, h, pts};
    }""", rows.nth(0).element_handle())
    w, h, pts = bar["w"], bar["h"], bar["pts"]
    assert min(x for x, _ in pts) == pytest.approx(0.6 * w, abs=1e-6)
    assert max(x for x, _ in pts) == pytest.approx(1.0 * w, abs=1e-6)
    curve = pts[1:-1]  # between the two base corners
    for x, y in curve:  # linear from 0 to 1: height = (x - start) / (stop - start)
        assert h - y == pytest.approx(h * (x / w - 0.6) / 0.4, abs=1e-6)
    assert "60% to 100% of the sampling" in rows.nth(0).locator(".ld-sched").get_attribute("title")
    expect(rows.nth(1).locator(".ld-sched")).to_have_text("steps 0–12")
    # An unscheduled row's indicator takes no eye until hovered.
    plain = rows.nth(2).locator(".ld-sched")
    page.mouse.move(1400, 900)
    assert plain.evaluate("e => getComputedStyle(e).opacity") == "0"
    rows.nth(2).hover()
    expect(plain).to_have_css("opacity", "1")
    heights = [rows.nth(i).bounding_box()["height"] for i in range(3)]
    assert max(heights) - min(heights) < 0.5, heights
    page.mouse.move(1400, 900)
    page.screenshot(path=str(docs_dir / "schedule-rows.png"), clip=deck.nodes_clip(page, [node]))
    # Clearing and setting a schedule leaves the node's size as it was.
    size = page.evaluate(f"(id) => [...{APP}.graph.getNodeById(id).size]", node)
    open_editor(page, widget, 0).locator(".ld-sched-clear").click()
    expect(page.get_by_role("dialog", name="Schedule")).to_have_count(0)
    assert page.evaluate(f"(id) => [...{APP}.graph.getNodeById(id).size]", node) == size


# --- the editor --------------------------------------------------------------------------------------


def test_editing_start_and_stop_stores_the_value(page, server, docs_dir):
    node, widget = stack(page, [dict(PLAIN), dict(PLAIN, lora="styles/beta_ink.safetensors")])
    editor = open_editor(page, widget, 0)
    fill(editor, start="0.2", stop="0.7")
    editor.screenshot(path=str(docs_dir / "schedule-editor.png"))
    apply(page, editor)
    assert schedules(page, node) == [{"start": 0.2, "stop": 0.7}, "absent"]
    expect(widget.locator(".ld-row").nth(0).locator(".ld-sched.ld-set .ld-sched-bar")).to_have_count(1)

    editor = open_editor(page, widget, 0)
    expect(editor.locator(".ld-sched-start")).to_have_value("0.2")
    fill(editor, unit="steps", start="0", stop="12")
    apply(page, editor)
    assert schedules(page, node)[0] == {"start": 0, "stop": 12, "unit": "steps"}
    expect(widget.locator(".ld-row").nth(0).locator(".ld-sched")).to_have_text("steps 0–12")

    editor = open_editor(page, widget, 0)
    fill(editor, stop="")  # to the end
    editor.locator(".ld-sched-start").press("Enter")  # Enter applies too
    expect(page.get_by_role("dialog", name="Schedule")).to_have_count(0)
    assert schedules(page, node)[0] == {"start": 0, "unit": "steps"}
    expect(widget.locator(".ld-row").nth(0).locator(".ld-sched")).to_have_text("steps 0–end")

    editor = open_editor(page, widget, 1)
    fill(editor, start="0.5", stop="1", **{"from": "0", "to": "1"}, curve="ease_in_out", keyframes="5")
    apply(page, editor)
    assert schedules(page, node)[1] == {"start": 0.5, "stop": 1, "from": 0, "to": 1, "curve": "ease_in_out",
                                        "keyframes": 5}


KEYFRAMES_RANGE = "keyframes must be a whole number from 2 to 100"  # loader/schedule.py's limits


def test_invalid_input_is_shown_not_stored(page, server):
    node, widget = stack(page, [dict(PLAIN)])
    editor = open_editor(page, widget, 0)
    message = editor.locator(".ld-sched-msg")
    cases = [
        ({"start": "0.5", "stop": "0.3"}, "start (0.5) must come before stop (0.3)", "stop"),
        ({"start": "0.4", "stop": "0.4"}, "start (0.4) must come before stop (0.4)", "stop"),
        ({"start": "0", "stop": "1.5"}, "stop must be between 0 and 1", "stop"),
        ({"start": "-0.1", "stop": "0.5"}, "start must be between 0 and 1", "start"),
        ({"start": "abc", "stop": "0.5"}, "start must be a number, not “abc”", "start"),
        ({"unit": "steps", "start": "-2", "stop": "5"}, "start must be a whole step, 0 to 10000", "start"),
        ({"start": "2.5", "stop": "5"}, "start must be a whole step, 0 to 10000", "start"),
        ({"start": "0", "stop": "10001"}, "stop must be a whole step, 0 to 10000", "stop"),
        ({"start": "0", "stop": "5", "keyframes": "1"}, KEYFRAMES_RANGE, "keyframes"),
        ({"start": "0", "stop": "5", "keyframes": "101"}, KEYFRAMES_RANGE, "keyframes"),
        ({"keyframes": "", "from": "101"}, "from must lie between -100 and 100", "from"),
        ({"from": "2", "to": "3", "curve": "hold"}, "“hold” keeps one strength", "to"),
    ]
    for fields, text, bad in cases:
        fill(editor, **fields)
        expect(message).to_contain_text(text)
        expect(editor.locator(f".ld-sched-{bad}")).to_have_class(re.compile(r"\bld-invalid\b"))
        expect(editor.locator(".ld-sched-apply")).to_be_disabled()
        editor.locator(".ld-sched-stop").press("Enter")  # Enter does not store it either
        assert "schedule" not in deck.rows_of(page, node)[0]
    fill(editor, keyframes="", start="3", stop="9", curve="", **{"from": "", "to": ""})
    expect(message).to_be_empty()
    apply(page, editor)
    assert schedules(page, node) == [{"start": 3, "stop": 9, "unit": "steps"}]


def test_clearing_removes_the_key(page, server):
    node, widget = stack(page)
    editor = open_editor(page, widget, 1)
    editor.locator(".ld-sched-clear").click()
    expect(page.get_by_role("dialog", name="Schedule")).to_have_count(0)
    rows = deck.rows_of(page, node)
    assert "schedule" not in rows[1]
    expected = {k: v for k, v in ROWS[1].items() if k != "schedule"}
    assert list(rows[1].items()) == list(expected.items())  # the other keys, in their order
    assert rows[0] == ROWS[0] and rows[2] == ROWS[2]
    expect(widget.locator(".ld-row").nth(1).locator(".ld-sched.ld-set")).to_have_count(0)
    saved = page.evaluate(f"() => {APP}.graph.serialize()")
    stored = next(n for n in saved["nodes"] if n["type"] == "LoraDeckStack")["widgets_values"][0]
    assert "schedule" not in stored[1]


def test_unknown_fields_and_values_are_kept(page, server):
    odd = {"start": 0, "stop": 0.5, "curve": "cosine", "note": "mine", "extra": [1, {"deep": True}]}
    node, widget = stack(page, [dict(PLAIN, schedule=odd), dict(PLAIN, schedule="0-0.4"),
                                dict(PLAIN, schedule=None)])
    rows = widget.locator(".ld-row")
    expect(rows.nth(0).locator(".ld-sched")).to_have_text("sched ?")  # a curve it cannot draw
    expect(rows.nth(1).locator(".ld-sched")).to_have_text("sched ?")
    editor = open_editor(page, widget, 0)
    expect(editor.locator(".ld-sched-msg")).to_contain_text("curve “cosine” is not one of")
    expect(editor.locator(".ld-sched-msg")).to_contain_text("(kept as stored)")
    expect(editor.locator(".ld-sched-extra")).to_have_text("Also kept as stored: note, extra")
    fill(editor, stop="0.4")
    apply(page, editor)  # an unknown value the user left alone does not block an edit elsewhere
    stored = deck.rows_of(page, node)
    assert json.dumps(stored[0]["schedule"]) == json.dumps(dict(odd, stop=0.4))  # keys and order kept
    assert stored[1]["schedule"] == "0-0.4" and stored[2]["schedule"] is None
    # Opened and applied without a change, nothing is rewritten.
    editor = open_editor(page, widget, 0)
    apply(page, editor)
    assert json.dumps(deck.rows_of(page, node)[0]["schedule"]) == json.dumps(dict(odd, stop=0.4))
    # A schedule that is not an object is replaced only after the editor says so.
    editor = open_editor(page, widget, 1)
    expect(editor.locator(".ld-sched-note")).to_contain_text('"0-0.4"')
    editor.locator(".ld-sched-cancel").click()
    assert deck.rows_of(page, node)[1]["schedule"] == "0-0.4"


def test_old_workflow_loads_and_saves_unchanged(page, server):
    workflow = json.loads(EXAMPLE.read_text())
    original = next(n for n in workflow["nodes"] if n["type"] == "LoraDeckStack")["widgets_values"]
    assert all("schedule" not in row for row in original[0])
    page.evaluate(f"(wf) => {APP}.loadGraphData(wf)", workflow)
    page.wait_for_function(f"() => {APP}.graph.nodes.some(n => n.type === 'LoraDeckStack')")
    saved = page.evaluate(f"() => {APP}.graph.serialize()")
    again = next(n for n in saved["nodes"] if n["type"] == "LoraDeckStack")["widgets_values"]
    assert json.dumps(again) == json.dumps(original)
    assert _prompt_rows(page) == [{"__value__": original[0]}]


# --- every path a scheduled row travels --------------------------------------------------------------


def test_save_and_load(page, server):
    stack(page)
    saved = page.evaluate(f"() => JSON.stringify({APP}.graph.serialize())")
    stored = next(n for n in json.loads(saved)["nodes"] if n["type"] == "LoraDeckStack")["widgets_values"]
    assert stored == [ROWS]
    page.evaluate(f"() => {APP}.graph.clear()")
    page.evaluate(f"(wf) => {APP}.loadGraphData(JSON.parse(wf))", saved)
    assert _stacks(page) == [ROWS]
    again = page.evaluate(f"() => JSON.stringify({APP}.graph.serialize())")
    assert json.dumps(json.loads(again)["nodes"][0]["widgets_values"]) == json.dumps(stored)


def test_api_export_and_import(page, server):
    stack(page)
    prompt = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
    assert [v["inputs"]["rows"] for v in prompt.values()] == [{"__value__": ROWS}]
    page.evaluate(f"(p) => {APP}.loadApiJson(p, 'exported.json')", prompt)
    page.wait_for_function(f"() => {APP}.graph.nodes.some(n => n.type === 'LoraDeckStack')")
    assert _stacks(page) == [ROWS]
    assert _prompt_rows(page) == [{"__value__": ROWS}]


def test_copy_paste(page, server):
    node, _ = stack(page)
    page.evaluate(f"""(id) => {{ const c = {APP}.canvas; c.deselectAll(); c.select({APP}.graph.getNodeById(id));
        c.copyToClipboard(); c.pasteFromClipboard({{ position: [700, 420] }}); }}""", node)
    assert _stacks(page) == [ROWS, ROWS]
    first, pasted = deck.node_ids(page, "LoraDeckStack")
    # The copy's schedule is its own: editing it leaves the original alone.
    editor = open_editor(page, deck.rows_widget(page, pasted), 0)
    fill(editor, start="0.25")
    apply(page, editor)
    assert deck.rows_of(page, first) == ROWS
    assert deck.rows_of(page, pasted)[0]["schedule"] == dict(RAMP, start=0.25)


def test_subgraph(page, server):
    node, _ = stack(page)
    page.evaluate(f"(id) => {{ {APP}.graph.convertToSubgraph(new Set([{APP}.graph.getNodeById(id)])); }}", node)
    assert deck.node_ids(page, "LoraDeckStack") == []
    assert _prompt_rows(page) == [{"__value__": ROWS}]
    saved = page.evaluate(f"() => JSON.stringify({APP}.graph.serialize())")
    page.evaluate(f"(wf) => {APP}.loadGraphData(JSON.parse(wf))", saved)
    assert _prompt_rows(page) == [{"__value__": ROWS}]
    # And back out of the subgraph: the rows are the node's again.
    page.evaluate(f"""() => {{ const sub = {APP}.graph.nodes.find(n => n.subgraph);
        {APP}.graph.unpackSubgraph(sub); }}""")
    assert _stacks(page) == [ROWS]


def test_subgraph_edited_inside(page, server):
    node, _ = stack(page)
    sub = page.evaluate(f"(id) => {APP}.graph.convertToSubgraph(new Set([{APP}.graph.getNodeById(id)])).node.id", node)
    page.evaluate(f"(id) => {{ const n = {APP}.graph.getNodeById(id); {APP}.canvas.openSubgraph(n.subgraph, n); }}",
                  sub)
    widget = page.locator(".loradeck-rows", has=page.locator(".ld-row")).filter(visible=True)
    expect(widget).to_have_count(1)
    editor = open_editor(page, widget, 2)
    fill(editor, start="0", stop="0.4")
    apply(page, editor)
    page.locator("[class*=breadcrumb] a, [class*=breadcrumb] button").first.click()
    page.wait_for_function(f"() => {APP}.canvas.graph === {APP}.graph")
    assert _prompt_rows(page) == [{"__value__": [ROWS[0], ROWS[1], dict(ROWS[2], schedule={"start": 0, "stop": 0.4})]}]


def _wait_schedule(page, index: int, expected) -> None:
    page.wait_for_function(
        f"""([i, want]) => {{ const w = {APP}.graph.nodes[0]?.widgets?.[0];
            return w && JSON.stringify(w.value[i].schedule ?? 'absent') === JSON.stringify(want); }}""",
        arg=[index, expected], timeout=15_000)


def test_undo_redo(page, server):
    node, widget = stack(page)
    deck.settle(page, node)
    editor = open_editor(page, widget, 2)
    fill(editor, start="0.1", stop="0.9", to="0")  # several fields, one Apply: one undo step
    apply(page, editor)
    editor = open_editor(page, widget, 0)
    editor.locator(".ld-sched-clear").click()
    assert schedules(page, node) == ["absent", STEPS, {"start": 0.1, "stop": 0.9, "to": 0}]
    page.mouse.click(1100, 700)  # focus the canvas
    page.keyboard.press("Control+z")
    _wait_schedule(page, 0, RAMP)
    assert schedules(page, node)[2] == {"start": 0.1, "stop": 0.9, "to": 0}
    page.keyboard.press("Control+z")
    _wait_schedule(page, 2, "absent")
    assert _stacks(page) == [ROWS]
    page.keyboard.press("Control+y")
    _wait_schedule(page, 2, {"start": 0.1, "stop": 0.9, "to": 0})
    page.keyboard.press("Control+Shift+z")
    _wait_schedule(page, 0, "absent")
    assert schedules(page, node) == ["absent", STEPS, {"start": 0.1, "stop": 0.9, "to": 0}]


def test_nodes_2_renderer(page, server, docs_dir):
    page.evaluate(f"() => {APP}.extensionManager.setting.set('Comfy.VueNodes.Enabled', true)")
    try:
        node, widget = stack(page)
        widget.wait_for()
        rows = widget.locator(".ld-row")
        expect(rows.nth(0).locator(".ld-sched.ld-set .ld-sched-bar")).to_be_visible()
        expect(rows.nth(1).locator(".ld-sched")).to_have_text("steps 0–12")
        heights = [rows.nth(i).bounding_box()["height"] for i in range(3)]
        assert max(heights) - min(heights) < 0.5, heights
        editor = open_editor(page, widget, 2)
        fill(editor, start="0.3", stop="0.8")
        apply(page, editor)
        assert schedules(page, node) == [RAMP, STEPS, {"start": 0.3, "stop": 0.8}]
        vue_node = page.locator(".lg-node", has=widget)
        expect(vue_node).to_have_count(1)  # drawn by the Nodes 2.0 renderer
        expect(rows.nth(2).locator(".ld-sched.ld-set .ld-sched-bar")).to_be_visible()
    finally:
        page.evaluate(f"() => {APP}.extensionManager.setting.set('Comfy.VueNodes.Enabled', false)")
