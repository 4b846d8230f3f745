"""LoraDeckPrompt's editor help and LoRA previews in a real browser against the real server.

Typing `<lora:` in the prompt node's text box opens the picker, the choice becomes a tag the server's
parser resolves to that file, and the box's title shows each tag's file and strengths; a preview sidecar
(`<stem>.preview.png`, A1111's and Civitai Helper's name) shows in the info panel and in the picker.
"""

from __future__ import annotations

import struct
import zlib

import deck
import pytest

APP = deck.APP
PREVIEW_SIZE = (12, 8)


def png(width: int, height: int) -> bytes:
    """A real PNG (8-bit RGB, one IDAT), written from the PNG specification's chunk layout."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"".join(bytes((x * 20 % 256, y * 30 % 256, 128)) for x in range(width))
                    for y in range(height))  # filter byte 0, then RGB
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture
def preview(server):
    """alpha_style's preview sidecar for the length of one test (other tests see the library without it)."""
    path = server.loras / "alpha_style.preview.png"
    path.write_bytes(png(*PREVIEW_SIZE))
    yield path
    path.unlink()


def natural_width(locator) -> int:
    locator.wait_for()
    locator.page.wait_for_function("(img) => img.complete", arg=locator.element_handle())
    return locator.evaluate("(img) => img.naturalWidth")


def test_preview_in_info_panel_and_picker(page, server, preview, docs_dir):
    node = deck.add_node(page, "LoraDeckStack", (360, 160))
    deck.set_rows(page, node, [{"on": True, "lora": "alpha_style.safetensors", "strength": 1,
                                "clip_strength": None, "blocks": ""}])
    widget = deck.rows_widget(page, node)
    widget.locator(".ld-info-btn").click()
    image = page.get_by_role("dialog").locator("img.ld-preview")
    assert natural_width(image) == PREVIEW_SIZE[0]
    page.keyboard.press("Escape")

    widget.locator(".ld-add").click()
    search = page.locator(".ld-picker .ld-search")
    search.fill("alpha")
    thumb = page.locator(".ld-picker img.ld-picker-thumb")
    assert natural_width(thumb) == PREVIEW_SIZE[0]  # the highlighted entry's preview
    assert "alpha_style" in thumb.get_attribute("src")
    search.fill("beta")  # a LoRA without a sidecar: no image
    page.locator(".ld-picker .ld-item.ld-active", has_text="beta_ink").wait_for()
    assert thumb.is_hidden()
    page.locator(".ld-picker .ld-item", has_text="beta_ink").hover()
    assert thumb.is_hidden()
    search.fill("")
    page.locator(".ld-picker summary", has_text="styles").first.click()
    page.locator(".ld-picker .ld-item", has_text="alpha_style").hover()  # hovering shows it too
    assert natural_width(thumb) == PREVIEW_SIZE[0] and thumb.is_visible()
    page.locator(".ld-picker").screenshot(path=str(docs_dir / "picker-preview.png"))
    page.keyboard.press("Escape")


def _text_box(page, node, vue: bool):
    if vue:
        box = page.locator(f".lg-node[data-node-id='{node}'] textarea").first
    else:
        page.evaluate(f"(id) => {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'text').element"
                      ".setAttribute('data-testid', 'prompt-' + id)", node)
        box = page.get_by_test_id(f"prompt-{node}")
    box.wait_for()
    return box


@pytest.mark.parametrize("renderer", ["canvas", "nodes-2"])
def test_lora_tag_typed_in_prompt(page, server, renderer):
    vue = renderer == "nodes-2"
    if vue:
        page.evaluate(f"() => {APP}.extensionManager.setting.set('Comfy.VueNodes.Enabled', true)")
    try:
        node = deck.add_node(page, "LoraDeckPrompt", (360, 160))
        box = _text_box(page, node, vue)
        box.click()
        page.keyboard.type("a cat, <lora:")
        search = page.locator(".ld-picker .ld-search")
        search.wait_for()
        search.fill("beta")
        page.locator(".ld-picker .ld-item.ld-active").wait_for()
        search.press("Enter")
        page.locator(".ld-picker").wait_for(state="detached")
        expected = "a cat, <lora:styles/beta_ink:1>"
        value = lambda: page.evaluate(  # noqa: E731
            f"(id) => {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'text').value", node)
        assert value() == expected
        page.keyboard.type(", ink")  # the caret is after the tag
        page.wait_for_function(f"([id, v]) => {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'text')"
                               ".value === v", arg=[node, expected + ", ink"])
        assert box.input_value() == expected + ", ink"
        status, reading = server.post("/loradeck/prompt_tags", {"text": value()})
        assert status == 200 and reading["error"] is None
        assert [(t["file"], t["model"], t["clip"]) for t in reading["tags"]] == [
            ("styles/beta_ink.safetensors", 1, 1)]
        inputs = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")[str(node)]["inputs"]
        assert inputs["text"] == expected + ", ink"
        # Hovering the box: each tag with its file and strengths.
        page.mouse.move(5, 5)
        box.hover()
        page.wait_for_function("(box) => (box.title || '').includes('styles/beta_ink.safetensors')",
                               arg=box.element_handle(), timeout=10_000)
        assert box.get_attribute("title") == ("<lora:styles/beta_ink:1> → styles/beta_ink.safetensors "
                                              "(model 1, clip 1)")
    finally:
        if vue:
            page.evaluate(f"() => {APP}.extensionManager.setting.set('Comfy.VueNodes.Enabled', false)")


def test_tag_title_names_an_error(page, server):
    node = deck.add_node(page, "LoraDeckPrompt", (360, 160))
    box = _text_box(page, node, vue=False)
    box.fill("<lora:no_such_lora:0.5> x")  # pasted, as it were: typing `<lora:` would open the picker
    page.mouse.move(5, 5)
    box.hover()
    page.wait_for_function("(box) => (box.title || '').includes('no_such_lora')", arg=box.element_handle())
    assert box.get_attribute("title").startswith("<lora:no_such_lora:0.5>: ")
