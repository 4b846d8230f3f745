"""The block editor against the server's grammar: every spec of the grammar's table (tests/spec_table.py)
comes back byte for byte from an editor opened and closed, a slider keeps the rest of a spec's meaning,
and a spec the server cannot read is never replaced without the user's yes."""

from __future__ import annotations

import deck
import pytest
from playwright.sync_api import expect
from spec_table import ERRORS, SPECS

APP = deck.APP
LORA_OF = {"sd1": "alpha_style.safetensors", "sdxl": "xl/epsilon_xl.safetensors", "flux": ""}  # no Flux file:
SLIDER_OF = {"sd1": "IN04", "sdxl": "IN04", "flux": "D05"}  # the Flux layout is chosen in the editor


def _stack(page):
    node = deck.add_node(page, "LoraDeckStack", (360, 120))
    return node, deck.rows_widget(page, node)


def _open(page, node, widget, family, text):
    """Give the node one row with `text`, open its editor, wait for the server's reading; the editor."""
    deck.set_rows(page, node, [{"on": True, "lora": LORA_OF[family], "strength": 1, "clip_strength": None,
                                "blocks": text}])
    widget.locator(".ld-blocks").click()
    editor = widget.locator(".ld-editor")
    expect(editor).not_to_have_attribute("data-mode", "loading")
    if family == "flux":
        editor.locator(".ld-layout").select_option("flux")
        expect(editor.locator('.ld-cell[data-block="D05"]')).to_have_count(1)
        expect(editor).not_to_have_attribute("data-mode", "loading")
    return editor


def _server_reading(server, family, text):
    status, body = server.post("/loradeck/spec", {"spec": text, "layout": family})
    assert status == 200, body
    return body


def _blocks(page, node):
    return deck.rows_of(page, node)[0]["blocks"]


def test_every_spec_of_the_grammar_survives_the_editor_untouched(page, server):
    node, widget = _stack(page)
    cases = [(name, family, text) for name, (family, text) in SPECS.items()]
    cases += [(f"error {text!r}", "sd1", text) for text, _ in ERRORS]
    for name, family, text in cases:
        editor = _open(page, node, widget, family, text)
        reading = _server_reading(server, family, text)
        mode = "error" if reading["error"] else "sliders" if reading["sliders"] else "overrides"
        expect(editor, name).to_have_attribute("data-mode", mode)
        if reading["error"]:
            expect(editor.locator(".ld-editor-error"), name).to_contain_text(reading["error"])
        else:
            expect(editor.locator(".ld-reading"), name).to_have_text(reading["reading"])
        assert editor.locator(".ld-spec").input_value() == text, name
        widget.locator(".ld-blocks").click()  # close it
        expect(widget.locator(".ld-editor")).to_have_count(0)
        assert _blocks(page, node) == text, name  # byte for byte
    assert not page.errors, page.errors


def test_a_slider_keeps_the_rest_of_the_meaning(page, server):
    node, widget = _stack(page)
    for name, (family, text) in SPECS.items():
        editor = _open(page, node, widget, family, text)
        before = _server_reading(server, family, text)
        slot = SLIDER_OF[family]
        slider = editor.locator(f'.ld-cell[data-block="{slot}"] .ld-slider')
        slider.focus()
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(f"([id, was]) => {APP}.graph.getNodeById(id).widgets[0].value[0].blocks !== was",
                               arg=[node, text])
        written = _blocks(page, node)
        after = _server_reading(server, family, written)
        assert after["error"] is None, (name, written, after["error"])
        moved = {s for s in before["ratios"] if after["ratios"][s] != before["ratios"][s]}
        assert moved == {slot}, (name, written, moved)
        assert after["ratios"][slot] == pytest.approx(float(slider.input_value()))
        assert after["rules"] == before["rules"], (name, written)
        if not before["sliders"]:  # what sliders cannot hold stays, word for word, with the slider after it
            assert written.startswith(text + "; "), (name, written)
        widget.locator(".ld-blocks").click()
    assert not page.errors, page.errors


def test_a_spec_the_server_cannot_read_is_never_replaced_silently(page, server):
    node, widget = _stack(page)
    bad = "IN04=1, XX=2"
    editor = _open(page, node, widget, "sd1", bad)
    expect(editor).to_have_attribute("data-mode", "error")
    expect(editor.locator(".ld-editor-error")).to_have_attribute("data-position", "9")
    slider = editor.locator('.ld-cell[data-block="IN04"] .ld-slider')
    assert slider.is_disabled()
    slider.evaluate("s => { s.value = 0; s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }")
    editor.locator('.ld-cell[data-block="IN04"]').dispatch_event("dblclick")
    assert _blocks(page, node) == bad
    editor.locator(".ld-preset").select_option("MIDD")
    expect(editor.locator(".ld-editor-ask")).to_contain_text(f"Replace “{bad}”")
    assert _blocks(page, node) == bad
    editor.locator(".ld-ask-no").click()
    assert _blocks(page, node) == bad
    editor.locator(".ld-reset").click()
    assert _blocks(page, node) == bad
    editor.locator(".ld-ask-yes").click()  # the user said so
    assert _blocks(page, node) == ""
    expect(editor).to_have_attribute("data-mode", "sliders")
    assert not page.errors, page.errors


def test_replacing_what_sliders_cannot_hold_is_asked_for(page, server):
    node, widget = _stack(page)
    text = SPECS["elemental"][1]  # IN05=0.8 and an element rule
    editor = _open(page, node, widget, "sd1", text)
    expect(editor).to_have_attribute("data-mode", "overrides")
    expect(editor.locator(".ld-editor-note")).to_contain_text("1 element rule")
    editor.locator(".ld-reset").click()
    expect(editor.locator(".ld-editor-ask")).to_be_visible()
    editor.locator(".ld-ask-no").click()
    assert _blocks(page, node) == text
    editor.locator(".ld-replace").click()  # "Replace with sliders": the per-block values, without the rule
    assert _blocks(page, node) == "IN05=0.8"
    expect(editor).to_have_attribute("data-mode", "sliders")
    assert not page.errors, page.errors
