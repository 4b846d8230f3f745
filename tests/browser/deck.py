"""Helpers that drive the ComfyUI frontend page: add nodes, find a node's rows widget, read values."""

from __future__ import annotations

from playwright.sync_api import expect

APP = "window.comfyAPI.app.app"


def add_node(page, node_type: str, pos=(80, 80)) -> int | str:  # newer frontends' node ids are strings
    return page.evaluate(
        f"""([type, pos]) => {{
            const node = window.LiteGraph.createNode(type);
            node.pos = pos;
            {APP}.graph.add(node);
            {APP}.canvas.setDirty(true, true);
            return node.id;
        }}""", [node_type, list(pos)])


def add_node_by_search(page, query: str, at=(500, 300)) -> int | str:
    """Add a node the way a user does: double-click the canvas, type in the node search, press Enter."""
    before = set(page.evaluate(f"() => {APP}.graph.nodes.map(n => n.id)"))
    # The search box: "Search Nodes..." up to frontend 1.3x, "Add a node..." in newer ones.
    box = page.locator(".comfy-vue-node-search-container input, input[placeholder*='Search'], "
                       "input[placeholder*='Add a node']").first
    for attempt in range(4):  # a double-click that lands while the canvas is still settling opens nothing
        page.mouse.dblclick(*at)
        try:
            box.wait_for(state="visible", timeout=5_000)
            break
        except Exception:
            if attempt == 3:
                raise
    box.fill(query)
    page.locator(".p-autocomplete-option, [role='option']", has_text=query).first.click()
    # Newer frontends hold the chosen node as a ghost that follows the mouse until a click places it.
    # The first pointer event after the search closes only moves the ghost: click until it is placed.
    for _ in range(4):
        if not page.evaluate(f"() => {APP}.graph.nodes.some(n => n.flags?.ghost)"):
            break
        page.mouse.click(*at)
        page.wait_for_timeout(200)
    page.wait_for_function(f"(n) => {APP}.graph.nodes.length > n", arg=len(before))
    (new,) = set(page.evaluate(f"() => {APP}.graph.nodes.map(n => n.id)")) - before
    return new


def rows_of(page, node_id) -> list[dict]:
    return page.evaluate(
        f"(id) => {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'rows').value", node_id)


def set_rows(page, node_id, rows: list[dict]) -> None:
    page.evaluate(
        f"([id, rows]) => {{ {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'rows').value = rows; }}",
        [node_id, rows])


def rows_widget(page, node_id):
    """A locator for the node's rows widget element (marked with a test id on the fly)."""
    page.evaluate(
        f"(id) => {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'rows').element"
        ".setAttribute('data-testid', 'rows-' + id)", node_id)
    return page.get_by_test_id(f"rows-{node_id}")


def node_ids(page, node_type: str) -> list[int]:
    return page.evaluate(f"(t) => {APP}.graph.nodes.filter(n => n.type === t).map(n => n.id)", node_type)


def add_row(page, widget, query: str) -> None:
    """Add a row with the widget's "+ Add LoRA" button and the picker's first hit for `query`."""
    before = widget.locator(".ld-row").count()
    pick(page, widget.locator(".ld-add"), query)
    expect(widget.locator(".ld-row")).to_have_count(before + 1)


def pick(page, anchor, query: str) -> None:
    """Open the picker from `anchor`, type a search and take the first hit."""
    anchor.click()
    search = page.locator(".ld-picker .ld-search")
    search.fill(query)
    page.locator(".ld-picker .ld-item.ld-active").wait_for()
    search.press("Enter")
    page.locator(".ld-picker").wait_for(state="detached")


def wait_hashes(page, node_id, count: int) -> None:
    """Wait until `count` rows carry the SHA-256 the widget fetches after a pick."""
    page.wait_for_function(
        f"([id, n]) => {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'rows').value"
        ".filter(r => r.sha256).length >= n", arg=[node_id, count], timeout=30_000)


def nodes_clip(page, node_ids: list[int], margin: int = 16) -> dict:
    """The page rectangle around some nodes (title bars included), for screenshots."""
    return page.evaluate(
        f"""([ids, margin]) => {{
            const app = {APP};
            const rect = app.canvas.canvas.getBoundingClientRect();
            const [ox, oy] = app.canvas.ds.offset, s = app.canvas.ds.scale, title = LiteGraph.NODE_TITLE_HEIGHT;
            let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
            for (const id of ids) {{
                const n = app.graph.getNodeById(id);
                x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
                x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
            }}
            return {{ x: rect.left + (x0 + ox) * s - margin, y: rect.top + (y0 + oy) * s - margin,
                      width: (x1 - x0) * s + 2 * margin, height: (y1 - y0) * s + 2 * margin }};
        }}""", [node_ids, margin])


def settle(page, node_id) -> None:
    """Wait until the rows widget is in the page and the node has grown to fit its rows, then let the
    change tracker take the graph as it is (the next edit is then one undo step of its own)."""
    page.wait_for_function(
        f"""(id) => {{ const n = {APP}.graph.getNodeById(id), w = n.widgets.find(w => w.name === 'rows');
            return w.element.isConnected && Math.abs(n.size[1] - n.computeSize()[1]) <= 1; }}""", arg=node_id)
    # The frontend stamps `extra.workflowRendererVersion` on a graph whenever it loads one (undo and redo
    # load one); stamp it now too, or the first undo/redo after this looks like an edit and clears redo.
    page.evaluate(f"""() => {{ {APP}.graph.extra.workflowRendererVersion ??= "LG";
        {APP}.extensionManager.workflow.activeWorkflow.changeTracker.checkState(); }}""")
