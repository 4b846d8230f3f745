"""LoraDeckStack's rows in a real browser against the real server: editing, and every path rows travel."""

from __future__ import annotations

import hashlib
import json
import time

import deck
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

APP = deck.APP

ROWS = [
    {"on": True, "lora": "alpha_style.safetensors", "strength": 0.8, "clip_strength": None, "blocks": ""},
    {"on": False, "lora": "styles/beta_ink.safetensors", "strength": 0.5, "clip_strength": 0.25,
     "blocks": "IN04=0, OUT03=0.5"},
    {"on": True, "lora": "characters/delta_hero.safetensors", "strength": -1.25, "clip_strength": None, "blocks": ""},
]


def stack_with_rows(page, rows=ROWS, pos=(360, 160)) -> int:
    node = deck.add_node(page, "LoraDeckStack", pos)
    deck.set_rows(page, node, rows)
    return node


def test_add_pick_strengths_toggles(page, server, docs_dir):
    node = deck.add_node_by_search(page, "LoRA Deck Stack", at=(420, 220))
    assert page.evaluate(f"(id) => {APP}.graph.getNodeById(id).type", node) == "LoraDeckStack"
    widget = deck.rows_widget(page, node)
    deck.add_row(page, widget, "alpha")
    # The second LoRA through the folder tree instead of the search.
    widget.locator(".ld-add").click()
    page.locator(".ld-picker summary", has_text="styles").first.click()
    page.locator(".ld-picker .ld-item", has_text="beta_ink").click()
    expect(widget.locator(".ld-row")).to_have_count(2)
    deck.add_row(page, widget, "hero delta")  # words in any order
    rows = widget.locator(".ld-row")

    strength = rows.nth(0).locator(".ld-strength")
    strength.fill("0.8")
    strength.press("Tab")
    rows.nth(1).locator(".ld-link").click()  # separate clip strength for row 2
    clip = rows.nth(1).locator(".ld-clip")
    clip.fill("0.3")
    clip.press("Tab")
    rows.nth(2).locator(".ld-on").uncheck()
    deck.wait_hashes(page, node, 3)

    value = deck.rows_of(page, node)
    assert [(r["lora"], r["on"], r["strength"], r["clip_strength"]) for r in value] == [
        ("alpha_style.safetensors", True, 0.8, None),
        ("styles/beta_ink.safetensors", True, 1, 0.3),
        ("characters/delta_hero.safetensors", False, 1, None),
    ]
    expected_sha = hashlib.sha256(server.files["alpha_style.safetensors"].read_bytes()).hexdigest()
    assert value[0]["sha256"] == expected_sha
    widget.locator(".ld-row").nth(0).locator(".ld-badge", has_text="SD1").wait_for()
    assert widget.locator(".ld-row").nth(0).locator(".ld-badge").inner_text() == "SD1"

    # Toggle all: mixed -> all on -> all off.
    widget.locator(".ld-on-all").click()
    assert [r["on"] for r in deck.rows_of(page, node)] == [True, True, True]
    widget.locator(".ld-on-all").click()
    assert [r["on"] for r in deck.rows_of(page, node)] == [False, False, False]
    widget.locator(".ld-on-all").click()
    page.mouse.click(1200, 800)  # deselect, for the picture
    page.screenshot(path=str(docs_dir / "stack.png"), clip=deck.nodes_clip(page, [node]))

    rows.nth(1).locator(".ld-remove").click()
    assert [r["lora"] for r in deck.rows_of(page, node)] == [
        "alpha_style.safetensors", "characters/delta_hero.safetensors"]
    assert not page.errors, page.errors


def test_drag_to_reorder(page, server):
    node = stack_with_rows(page)
    widget = deck.rows_widget(page, node)
    handle = widget.locator(".ld-row").nth(2).locator(".ld-handle")
    target = widget.locator(".ld-row").nth(0).bounding_box()
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(box["x"] + 4, box["y"] + (target["y"] + 2 - box["y"]) * step / 5)
    page.mouse.up()
    assert [r["lora"] for r in deck.rows_of(page, node)] == [
        ROWS[2]["lora"], ROWS[0]["lora"], ROWS[1]["lora"]]


def test_block_editor(page, server, docs_dir):
    node = stack_with_rows(page, [dict(ROWS[0])])
    widget = deck.rows_widget(page, node)
    widget.locator(".ld-blocks").click()
    editor = widget.locator('.ld-editor[data-mode="sliders"]')  # the server has read the spec
    editor.wait_for()
    assert editor.get_attribute("data-layout") == "sd1"  # from the LoRA's base model
    assert editor.locator(".ld-cell").count() == 28  # BASE, EMB, FINAL, IN00-IN11, M00, OUT00-OUT11
    slider = editor.locator('.ld-cell[data-block="IN04"] .ld-slider')
    slider.focus()
    for _ in range(20):  # 20 steps of 0.05: 1.0 -> 0.0
        page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"(id) => {APP}.graph.getNodeById(id).widgets[0].value[0].blocks === 'IN04=0'", arg=node)
    out = editor.locator('.ld-cell[data-block="OUT05"] .ld-slider')
    out.focus()
    for _ in range(10):
        page.keyboard.press("ArrowLeft")
    page.wait_for_function(
        f"(id) => {APP}.graph.getNodeById(id).widgets[0].value[0].blocks === 'IN04=0, OUT05=0.5'", arg=node)
    widget.screenshot(path=str(docs_dir / "block-editor.png"))

    editor.locator(".ld-preset").select_option("OUTALL")  # A1111's preset: its name, which the grammar reads
    assert deck.rows_of(page, node)[0]["blocks"] == "OUTALL"
    expect(editor.locator('.ld-cell[data-block="IN04"] .ld-cell-value')).to_have_text("0.00")
    editor.locator(".ld-preset").select_option("user:SOFTFACE")  # from the user's block_presets.txt
    assert deck.rows_of(page, node)[0]["blocks"] == "IN04=0.5, OUT05=0.25"
    expect(editor.locator('.ld-cell[data-block="OUT05"] .ld-cell-value')).to_have_text("0.25")
    text = editor.locator(".ld-spec")
    text.fill("OUT*=0.25, BASE=0")
    text.press("Enter")
    assert deck.rows_of(page, node)[0]["blocks"] == "OUT*=0.25, BASE=0"  # the text as typed
    expect(editor.locator('.ld-cell[data-block="OUT07"] .ld-cell-value')).to_have_text("0.25")
    editor.locator(".ld-reset").click()
    assert deck.rows_of(page, node)[0]["blocks"] == ""
    assert not page.errors, page.errors


def test_block_editor_takes_the_shape_of_other_networks(page, server):
    node = stack_with_rows(page, [{"on": True, "lora": "sd3/zeta_sd3.safetensors", "strength": 1,
                                   "clip_strength": None, "blocks": ""}])
    widget = deck.rows_widget(page, node)
    widget.locator(".ld-badge", has_text="SD3").wait_for()  # "…" until the file's facts arrive
    assert widget.locator(".ld-badge").inner_text() == "SD3"
    widget.locator(".ld-blocks").click()
    editor = widget.locator('.ld-editor[data-mode="sliders"]')
    editor.wait_for()
    assert editor.get_attribute("data-layout") == "lora"  # J00-J11, read from the LoRA's names
    assert editor.locator(".ld-cell").count() == 14  # and EMB, FINAL
    slider = editor.locator('.ld-cell[data-block="J05"] .ld-slider')
    slider.focus()
    for _ in range(20):
        page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"(id) => {APP}.graph.getNodeById(id).widgets[0].value[0].blocks === 'J05=0'", arg=node)


def test_info_panel(page, server, docs_dir):
    node = stack_with_rows(page, [dict(ROWS[0])])
    widget = deck.rows_widget(page, node)
    widget.locator(".ld-info-btn").click()
    dialog = page.get_by_role("dialog")
    sha = hashlib.sha256(server.files["alpha_style.safetensors"].read_bytes()).hexdigest()
    page.locator(".ld-copy-hash", has_text="AutoV2 " + sha[:10].upper()).wait_for(timeout=30_000)
    facts = dialog.locator(".ld-facts").inner_text()
    for expected in ("SD1", "kohya", "lora", "Rank\t4", "Alpha\t2", "512x512", "5 (0 text encoder)"):
        assert expected in facts, (expected, facts)
    energy = dialog.locator(".ld-energy")
    energy.locator(".ld-energy-svg").wait_for()
    assert "Block energy — strongest: " in energy.inner_text()
    assert energy.locator("rect").count() == 26
    tags = dialog.locator(".ld-tag")
    assert tags.first.inner_text().startswith("loradeck_style")
    assert tags.first.locator(".ld-count").inner_text() == "40"
    dialog.screenshot(path=str(docs_dir / "info-panel.png"))
    tags.nth(1).click()
    assert page.evaluate("navigator.clipboard.readText()") == "watercolor"
    dialog.locator(".ld-copy-tags").click()
    assert page.evaluate("navigator.clipboard.readText()") == "loradeck_style, watercolor, soft light, 1girl"
    page.keyboard.press("Escape")
    assert page.get_by_role("dialog").count() == 0


def test_missing_lora_relinked_by_hash(page, server):
    sha = hashlib.sha256(server.files["styles/deep/gamma_light.safetensors"].read_bytes()).hexdigest()
    moved = {"on": True, "lora": "old place/gamma_light_v1.safetensors", "strength": 0.7, "clip_strength": None,
             "blocks": "", "sha256": sha}
    node = stack_with_rows(page, [dict(ROWS[0]), moved])
    widget = deck.rows_widget(page, node)
    missing = widget.locator(".ld-row-missing")
    missing.wait_for()
    assert missing.count() == 1
    assert "old place/gamma_light_v1.safetensors" in missing.inner_text()
    missing.locator(".ld-relink").click()
    page.wait_for_function(
        f"(id) => {APP}.graph.getNodeById(id).widgets[0].value[1].lora === 'styles/deep/gamma_light.safetensors'",
        arg=node)
    assert widget.locator(".ld-row-missing").count() == 0
    row = deck.rows_of(page, node)[1]
    assert (row["strength"], row["sha256"]) == (0.7, sha)


def test_missing_without_hash_opens_picker(page, server):
    lost = {"on": True, "lora": "gone.safetensors", "strength": 1, "clip_strength": None, "blocks": ""}
    node = stack_with_rows(page, [lost])
    widget = deck.rows_widget(page, node)
    widget.locator(".ld-relink").click()
    page.locator(".ld-picker .ld-picker-note").wait_for()
    page.locator(".ld-picker .ld-search").fill("hero")
    page.locator(".ld-picker .ld-search").press("Enter")
    page.wait_for_function(
        f"(id) => {APP}.graph.getNodeById(id).widgets[0].value[0].lora === 'characters/delta_hero.safetensors'",
        arg=node)
    expect(widget.locator(".ld-row-missing")).to_have_count(0)



def test_side_panel_reset_clears_rows(page, server):
    """Newer frontends' properties panel resets a node's parameters to the defaults its inputs declare."""
    toggle = page.get_by_role("button", name="Toggle properties panel")
    if toggle.count() == 0:
        pytest.skip(f"frontend {server.frontend} has no properties panel")  # 1.32.9
    node = stack_with_rows(page)
    deck.settle(page, node)
    page.evaluate(f"(id) => {{ const c = {APP}.canvas; c.deselectAll(); c.select({APP}.graph.getNodeById(id)); }}",
                  node)
    reset = page.get_by_role("button", name="Reset all parameters", exact=True)
    opened = not reset.is_visible()  # the panel's open state outlives the page
    if opened:
        toggle.click()
    try:
        try:
            reset.wait_for(timeout=5_000)
        except PlaywrightTimeout:
            pytest.skip(f"frontend {server.frontend}'s properties panel has no Reset all parameters")
        reset.click()
        expect(deck.rows_widget(page, node).locator(".ld-row")).to_have_count(0)
        assert deck.rows_of(page, node) == []
        page.mouse.click(600, 800)  # focus the canvas
        page.keyboard.press("Control+z")  # and the reset is one undo step
        page.wait_for_function(f"(id) => {APP}.graph.getNodeById(id)?.widgets[0].value.length === 3", arg=node)
    finally:
        if opened or reset.is_visible():  # close it again: the tests that follow use the whole canvas
            toggle.click()

# --- every path rows travel -------------------------------------------------------------------------


def _rows_by_type(page) -> list[list[dict]]:
    return page.evaluate(f"""() => {APP}.graph.nodes.filter(n => n.type === 'LoraDeckStack')
        .map(n => n.widgets.find(w => w.name === 'rows').value)""")


def test_save_and_load_workflow(page, server):
    stack_with_rows(page)
    saved = page.evaluate(f"() => JSON.stringify({APP}.graph.serialize())")
    workflow = json.loads(saved)
    stored = next(n for n in workflow["nodes"] if n["type"] == "LoraDeckStack")["widgets_values"]
    assert stored == [ROWS]
    page.evaluate(f"() => {APP}.graph.clear()")
    page.evaluate(f"(wf) => {APP}.loadGraphData(JSON.parse(wf))", saved)
    assert _rows_by_type(page) == [ROWS]


def test_page_reload_keeps_rows(page, server):
    node = stack_with_rows(page)
    deck.settle(page, node)
    page.wait_for_timeout(500)  # the frontend stores the open workflow for a reload
    page.reload()
    page.wait_for_function(
        f"() => window.__loradeckRegistered && {APP}.graph?.nodes?.some(n => n.type === 'LoraDeckStack')",
        timeout=90_000)
    assert _rows_by_type(page) == [ROWS]


def test_copy_paste(page, server):
    node = stack_with_rows(page)
    page.evaluate(f"""(id) => {{ const c = {APP}.canvas; c.deselectAll(); c.select({APP}.graph.getNodeById(id));
        c.copyToClipboard(); c.pasteFromClipboard({{ position: [700, 420] }}); }}""", node)
    assert _rows_by_type(page) == [ROWS, ROWS]
    ids = deck.node_ids(page, "LoraDeckStack")
    # The copy is its own value: editing one leaves the other alone.
    pasted = deck.rows_widget(page, ids[1])
    pasted.locator(".ld-strength").first.fill("0.1")
    pasted.locator(".ld-strength").first.press("Tab")
    assert deck.rows_of(page, ids[0]) == ROWS
    assert deck.rows_of(page, ids[1])[0]["strength"] == 0.1


def test_api_prompt_export_and_import(page, server):
    stack_with_rows(page)
    prompt = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
    stacks = [n for n in prompt.values() if n["class_type"] == "LoraDeckStack"]
    assert stacks[0]["inputs"]["rows"] == {"__value__": ROWS}  # the documented API shape
    page.evaluate(f"(p) => {APP}.loadApiJson(p, 'exported.json')", prompt)
    page.wait_for_function(f"() => {APP}.graph.nodes.some(n => n.type === 'LoraDeckStack')")
    assert _rows_by_type(page) == [ROWS]
    again = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
    exported = next(n for n in again.values() if n["class_type"] == "LoraDeckStack")
    assert exported["inputs"]["rows"] == {"__value__": ROWS}


def test_subgraph(page, server):
    node = stack_with_rows(page)
    page.evaluate(f"(id) => {{ {APP}.graph.convertToSubgraph(new Set([{APP}.graph.getNodeById(id)])); }}", node)
    assert deck.node_ids(page, "LoraDeckStack") == []  # it now lives inside the subgraph
    prompt = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
    inner = {k: v for k, v in prompt.items() if v["class_type"] == "LoraDeckStack"}
    assert len(inner) == 1 and ":" in next(iter(inner))  # "<subgraph node>:<inner node>"
    assert next(iter(inner.values()))["inputs"]["rows"] == {"__value__": ROWS}
    saved = page.evaluate(f"() => JSON.stringify({APP}.graph.serialize())")
    page.evaluate(f"(wf) => {APP}.loadGraphData(JSON.parse(wf))", saved)
    prompt = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
    assert [v["inputs"]["rows"] for v in prompt.values() if v["class_type"] == "LoraDeckStack"] == [{"__value__": ROWS}]


def test_subgraph_edited_inside(page, server):
    node = stack_with_rows(page)
    sub = page.evaluate(f"(id) => {APP}.graph.convertToSubgraph(new Set([{APP}.graph.getNodeById(id)])).node.id", node)
    page.evaluate(f"(id) => {{ const n = {APP}.graph.getNodeById(id); {APP}.canvas.openSubgraph(n.subgraph, n); }}",
                  sub)  # what the node's "enter subgraph" button does
    inner = page.evaluate(f"() => {APP}.canvas.graph.nodes.find(n => n.type === 'LoraDeckStack').id")
    widget = page.locator(".loradeck-rows", has=page.locator(".ld-row")).filter(visible=True)
    expect(widget).to_have_count(1)
    strength = widget.locator(".ld-strength").first
    strength.fill("0.3")
    strength.press("Tab")
    assert page.evaluate(f"(id) => {APP}.canvas.graph.getNodeById(id).widgets[0].value[0].strength", inner) == 0.3
    page.locator("[class*=breadcrumb] a, [class*=breadcrumb] button").first.click()  # back to the workflow
    page.wait_for_function(f"() => {APP}.canvas.graph === {APP}.graph")
    expect(page.locator(".ld-row").filter(visible=True)).to_have_count(0)  # the inner rows stay inside
    prompt = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
    assert [v["inputs"]["rows"] for v in prompt.values() if v["class_type"] == "LoraDeckStack"] == [
        {"__value__": [dict(ROWS[0], strength=0.3), ROWS[1], ROWS[2]]}]

def _wait_state(page, condition: str) -> None:
    """Wait for an undo/redo to land; on a timeout, say what the change tracker holds."""
    try:
        page.wait_for_function(f"() => {condition}", timeout=15_000)
    except Exception:
        states = page.evaluate(f"""() => {{ const t = {APP}.extensionManager.workflow.activeWorkflow.changeTracker;
            const f = s => JSON.stringify(s);
            return {{ undo: t.undoQueue.map(f), redo: t.redoQueue.map(f), active: f(t.activeState) }}; }}""")
        (page.artifacts / "undo-states.json").write_text(json.dumps(states))
        raise AssertionError(f"{condition} never held; change tracker states in undo-states.json") from None


def test_undo_redo(page, server):
    node = stack_with_rows(page)
    deck.settle(page, node)
    widget = deck.rows_widget(page, node)
    strength = widget.locator(".ld-strength").first
    strength.fill("0.3")
    strength.press("Tab")
    widget.locator(".ld-row").nth(2).locator(".ld-remove").click()
    after = [dict(ROWS[0], strength=0.3), ROWS[1]]
    assert deck.rows_of(page, node) == after
    page.mouse.click(1100, 700)  # focus the canvas
    page.keyboard.press("Control+z")
    _wait_state(page, f"{APP}.graph.nodes[0]?.widgets[0].value.length === 3")
    assert _rows_by_type(page) == [[dict(ROWS[0], strength=0.3), ROWS[1], ROWS[2]]]
    page.keyboard.press("Control+z")
    _wait_state(page, f"{APP}.graph.nodes[0]?.widgets[0].value[0].strength === 0.8")
    assert _rows_by_type(page) == [ROWS]
    page.keyboard.press("Control+y")
    _wait_state(page, f"{APP}.graph.nodes[0]?.widgets[0].value[0].strength === 0.3")
    page.keyboard.press("Control+Shift+z")  # the other redo binding
    _wait_state(page, f"{APP}.graph.nodes[0]?.widgets[0].value.length === 2")
    assert _rows_by_type(page) == [after]


def test_queue_runs_on_the_server(page, server, docs_dir):
    rows = [
        {"on": True, "lora": "alpha_style.safetensors", "strength": 0.8, "clip_strength": None, "blocks": ""},
        {"on": True, "lora": "styles/beta_ink.safetensors", "strength": 0.5, "clip_strength": 0.25,
         "blocks": "IN04=0, OUT03=0.5"},
        {"on": False, "lora": "characters/delta_hero.safetensors", "strength": 1, "clip_strength": None, "blocks": ""},
    ]
    ids = page.evaluate(f"""(rows) => {{
        const make = (type, pos) => {{
            const n = LiteGraph.createNode(type); n.pos = pos; {APP}.graph.add(n); return n; }};
        const model = make('LoraDeckTestMiniModel', [120, 140]);
        const stack = make('LoraDeckStack', [120, 330]);
        const apply = make('LoraDeckApply', [640, 200]);
        const show = make('PreviewAny', [920, 200]);
        show.setSize([460, 220]);
        stack.widgets.find(w => w.name === 'rows').value = rows;
        model.connect(0, apply, 0); stack.connect(0, apply, 1); model.connect(1, apply, 2); apply.connect(2, show, 0);
        return {{ model: model.id, stack: stack.id, apply: apply.id, show: show.id }};
    }}""", rows)
    page.evaluate(f"() => {APP}.queuePrompt(0, 1)")
    deadline = time.monotonic() + 120
    text = None
    while time.monotonic() < deadline and text is None:
        _, history = server.get("/history")
        for entry in history.values():
            output = entry.get("outputs", {}).get(str(ids["show"]))
            if output:
                text = output["text"][0]
            if entry.get("status", {}).get("status_str") == "error":
                pytest.fail(f"the server failed the prompt: {entry['status']}")
        time.sleep(0.5)
    assert text is not None, "the queued workflow did not run"
    lines = [line for line in text.splitlines() if not line.startswith(" ")]  # one line per LoRA, then its table
    assert len(lines) == 2  # the disabled row is left out
    table = [line.split() for line in text.splitlines() if line.startswith(" ")]
    assert next(row[:2] for row in table if row and row[0] == "IN04") == ["IN04", "0"]  # the block weight applied
    assert next(row[:2] for row in table if row and row[0] == "OUT03") == ["OUT03", "0.5"]
    assert lines[0].startswith("alpha_style.safetensors: kohya lora")
    assert "model 0.8 → 5 weights" in lines[0]
    assert lines[1].startswith("styles/beta_ink.safetensors: kohya lora")
    assert "model 0.5 → 4 weights, clip 0.25" in lines[1]  # IN04=0 drops that block's patch
    assert "blocks 'IN04=0, OUT03=0.5'" in lines[1]
    page.wait_for_function(
        f"(id) => {APP}.graph.getNodeById(id).widgets?.some(w => String(w.value).includes('beta_ink'))",
        arg=ids["show"])
    page.mouse.click(1400, 900)
    page.screenshot(path=str(docs_dir / "workflow.png"), clip=deck.nodes_clip(page, list(ids.values())))


def test_base_model_mismatch_marked_after_a_run(page, server):
    rows = [
        {"on": True, "lora": "alpha_style.safetensors", "strength": 1, "clip_strength": None, "blocks": ""},
        {"on": True, "lora": "xl/epsilon_xl.safetensors", "strength": 1, "clip_strength": None, "blocks": ""},
    ]
    ids = page.evaluate(f"""(rows) => {{
        const make = (type, pos) => {{
            const n = LiteGraph.createNode(type); n.pos = pos; {APP}.graph.add(n); return n; }};
        const model = make('LoraDeckTestMiniModel', [120, 140]);
        const first = make('LoraDeckStack', [120, 330]);
        const second = make('LoraDeckStack', [620, 420]);
        const apply = make('LoraDeckApply', [1000, 200]);
        const show = make('PreviewAny', [1000, 420]);
        first.widgets.find(w => w.name === 'rows').value = [rows[0]];
        second.widgets.find(w => w.name === 'rows').value = [rows[1]];
        first.connect(0, second, 0); second.connect(0, apply, 1);
        model.connect(0, apply, 0); model.connect(1, apply, 2); apply.connect(2, show, 0);
        return {{ first: first.id, second: second.id }};
    }}""", rows)
    second = deck.rows_widget(page, ids["second"])
    second.locator(".ld-badge", has_text="SDXL").wait_for()  # "…" until the file's facts arrive
    assert second.locator(".ld-badge").inner_text() == "SDXL"
    page.evaluate(f"() => {APP}.queuePrompt(0, 1)")
    warning = second.locator(".ld-warn")
    warning.wait_for(timeout=120_000)
    assert "SDXL LoRA but the model is SD15" in warning.inner_text()
    # The first stack in the chain is marked too, and its SD1 LoRA fits the SD15 model.
    assert deck.rows_widget(page, ids["first"]).locator(".ld-warn").count() == 0


def test_nodes_2_renderer(page, server, docs_dir):
    page.evaluate(f"() => {APP}.extensionManager.setting.set('Comfy.VueNodes.Enabled', true)")
    try:
        node = deck.add_node(page, "LoraDeckStack", (360, 160))
        widget = deck.rows_widget(page, node)
        widget.wait_for()
        deck.add_row(page, widget, "alpha")
        deck.add_row(page, widget, "beta")
        widget.locator(".ld-row").nth(1).locator(".ld-on").uncheck()
        value = deck.rows_of(page, node)
        assert [(r["lora"], r["on"]) for r in value] == [
            ("alpha_style.safetensors", True), ("styles/beta_ink.safetensors", False)]
        widget.locator(".ld-blocks").first.click()
        widget.locator(".ld-editor").wait_for()
        vue_node = page.locator(".lg-node", has=widget)
        box = vue_node.bounding_box() if vue_node.count() else None
        clip = {"x": box["x"] - 12, "y": box["y"] - 12, "width": box["width"] + 24, "height": box["height"] + 24}
        page.screenshot(path=str(docs_dir / "nodes-2.png"), clip=clip if box else None)
    finally:
        page.evaluate(f"() => {APP}.extensionManager.setting.set('Comfy.VueNodes.Enabled', false)")


def _click_widget(page, node_id, name):
    """Click a canvas-drawn widget (a button) where the canvas draws it."""
    x, y = page.evaluate(f"""([id, name]) => {{
        const app = {APP}, n = app.graph.getNodeById(id), w = n.widgets.find(w => w.label === name || w.name === name);
        const rect = app.canvas.canvas.getBoundingClientRect();
        const [ox, oy] = app.canvas.ds.offset, s = app.canvas.ds.scale;
        return [rect.left + (n.pos[0] + n.size[0] / 2 + ox) * s, rect.top + (n.pos[1] + w.y + 10 + oy) * s];
    }}""", [node_id, name])
    page.mouse.click(x, y)


def test_loader_node_info_and_block_editor(page, server):
    node = deck.add_node(page, "LoraDeckLoader", (360, 160))
    page.evaluate(f"""(id) => {{ const n = {APP}.graph.getNodeById(id);
        n.widgets.find(w => w.name === 'lora_name').value = 'styles/beta_ink.safetensors'; }}""", node)
    page.wait_for_timeout(300)
    _click_widget(page, node, "Edit block weights")
    popup = page.locator(".ld-editor-popup")
    popup.locator('.ld-editor[data-mode="sliders"]').wait_for()
    popup.locator(".ld-preset").select_option("NOTE")  # text encoder off
    assert page.evaluate(f"(id) => {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'block_weights').value",
                         node) == "BASE=0"
    page.keyboard.press("Escape")
    _click_widget(page, node, "LoRA info")
    page.get_by_role("dialog").locator(".ld-facts").wait_for()
    assert "8" in page.get_by_role("dialog").locator(".ld-facts").inner_text()  # rank 8
    page.keyboard.press("Escape")
    # The buttons hold no value: the saved widgets and the API prompt are the node's own.
    prompt = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
    inputs = prompt[str(node)]["inputs"]
    assert sorted(inputs) == ["block_weights", "lora_name", "skip_unloadable", "split_qkv_scale", "strength_clip",
                              "strength_model"]
    saved = page.evaluate(f"(id) => {APP}.graph.serialize().nodes.find(n => String(n.id) === String(id))"
                          ".widgets_values", node)
    assert saved == ["styles/beta_ink.safetensors", 1, 1, "BASE=0", False, "auto"]


def test_loader_in_nodes_2(page, server):
    """The loader's LoRA picked in the Nodes 2.0 combo, its block editor and info from the node's own buttons."""
    page.evaluate(f"() => {APP}.extensionManager.setting.set('Comfy.VueNodes.Enabled', true)")
    try:
        node = deck.add_node(page, "LoraDeckLoader", (420, 120))
        vue_node = page.locator(f".lg-node[data-node-id='{node}']")
        vue_node.get_by_role("combobox", name="lora_name").click()
        page.get_by_role("option", name="styles/beta_ink.safetensors").click()
        expect(page.get_by_role("listbox")).to_have_count(0)  # the dropdown has closed
        page.wait_for_function(f"(id) => {APP}.graph.getNodeById(id).widgets[0].value === "
                               "'styles/beta_ink.safetensors'", arg=node)
        vue_node.get_by_role("button", name="Edit block weights").click()
        popup = page.locator(".ld-editor-popup")
        popup.locator('.ld-editor[data-mode="sliders"]').wait_for()
        assert popup.locator(".ld-editor").get_attribute("data-layout") == "sd1"  # read from the picked LoRA
        popup.locator(".ld-preset").select_option("NOTE")
        # The node shows what the editor wrote, and the API prompt carries it.
        page.wait_for_function("(id) => [...document.querySelectorAll(`.lg-node[data-node-id='${id}'] input, "
                               ".lg-node[data-node-id='${id}'] textarea`)].some(e => e.value === 'BASE=0')", arg=node)
        page.keyboard.press("Escape")
        vue_node.get_by_role("button", name="LoRA info").click()
        page.get_by_role("dialog").locator(".ld-facts").wait_for()
        assert "8" in page.get_by_role("dialog").locator(".ld-facts").inner_text()  # beta_ink's rank 8
        page.keyboard.press("Escape")
        inputs = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")[str(node)]["inputs"]
        assert (inputs["lora_name"], inputs["block_weights"]) == ("styles/beta_ink.safetensors", "BASE=0")
    finally:
        page.evaluate(f"() => {APP}.extensionManager.setting.set('Comfy.VueNodes.Enabled', false)")


def test_info_panel_pins_trigger_words(page, server):
    node = stack_with_rows(page, [dict(ROWS[0])])
    deck.rows_widget(page, node).locator(".ld-info-btn").click()
    dialog = page.get_by_role("dialog")
    words = dialog.locator(".ld-trigger-words")
    page.wait_for_function("el => el.textContent !== 'reading…'", arg=words.element_handle())
    dialog.locator(".ld-pin-input").fill("my ink, glow")
    dialog.locator(".ld-pin-save").click()
    dialog.locator(".ld-pin-status", has_text="saved").wait_for()
    assert words.inner_text().startswith("my ink, glow")
    stored = page.evaluate("""async () => (await (await fetch(
        '/api/loradeck/trigger_words?name=alpha_style.safetensors')).json()).pinned""")
    assert stored == ["my ink", "glow"]
    dialog.locator(".ld-pin-input").fill("")  # unpinned again: other tests see the file's own words
    dialog.locator(".ld-pin-save").click()
    page.wait_for_function("el => !el.textContent.includes('my ink')", arg=words.element_handle())
    assert dialog.locator(".ld-pin-status").inner_text() == "saved"
