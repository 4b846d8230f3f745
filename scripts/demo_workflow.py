"""A saved UI workflow (what the ComfyUI editor writes) as an API-format prompt, for headless runs.

The host has no server-side converter: the frontend builds the prompt (graphToPrompt). This does the same
from the host's own node definitions (`INPUT_TYPES()`): `widgets_values` are positional, one per widget
input in definition order, plus the extra "control after generate" value the frontend adds after INT seeds.
A widget holding a list (LoraDeckStack's rows) goes into the prompt as `{"__value__": [...]}`, as the
frontend sends it. Needs the host's `nodes` module loaded (tests/hosting.py `boot()`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example_workflows" / "loradeck_stack.json"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = ("seed", "noise_seed")  # the frontend adds "control after generate" to these INTs by name too
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")  # + an upload widget
# Custom input types that a frontend extension draws as a widget (no socket); their value is saved like any other.
CUSTOM_WIDGET_TYPES = {"LORADECK_ROWS"}
MUTED, BYPASSED = 2, 4


class WorkflowError(ValueError):
    """A UI workflow this converter cannot turn into a prompt; the message names the node."""


def load(path: str | Path = EXAMPLE) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def to_prompt(workflow: dict) -> dict:
    """The API-format prompt the frontend would queue for this UI workflow."""
    import nodes

    links = {link[0]: link for link in workflow.get("links", [])}  # [id, from, from_slot, to, to_slot, type]
    prompt = {}
    for node in workflow["nodes"]:
        node_class = nodes.NODE_CLASS_MAPPINGS.get(node["type"])
        if node_class is None:
            if any(slot.get("link") is not None for slot in node.get("inputs", [])) or any(
                    slot.get("links") for slot in node.get("outputs", [])):
                raise WorkflowError(f"node {node['id']}: unknown node type {node['type']!r} (is its pack installed?)")
            continue  # frontend-only nodes: notes
        if node.get("mode", 0) == MUTED:
            continue
        if node.get("mode", 0) == BYPASSED:
            raise WorkflowError(f"node {node['id']} ({node['type']}) is bypassed; this converter does not reroute")
        inputs = _widget_inputs(node, node_class)
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        title = node.get("title") or nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node["type"], node["type"])
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": title}}
    return prompt


def _widget_inputs(node: dict, node_class) -> dict:
    sockets = {slot["name"]: slot for slot in node.get("inputs", [])}
    values = list(node.get("widgets_values") or [])
    if isinstance(node.get("widgets_values"), dict):
        raise WorkflowError(f"node {node['id']}: named widgets_values are not supported")
    definition = node_class.INPUT_TYPES()
    inputs = {}
    position = 0
    for section in ("required", "optional"):
        for name, spec in definition.get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
            if not _is_widget(name, kind, options, sockets):
                continue
            if position >= len(values):
                if section == "optional":
                    break
                raise WorkflowError(f"node {node['id']} ({node['type']}): no saved value for widget {name!r}")
            value = values[position]
            position += 1
            inputs[name] = {"__value__": value} if isinstance(value, list) else value
            if kind == "INT" and options.get("control_after_generate", name in SEED_NAMES):
                position += 1  # "fixed" / "randomize" / …: a frontend-only widget
            elif any(options.get(option) for option in UPLOAD_OPTIONS):
                position += 1  # the upload button's value
    return inputs


def _is_widget(name: str, kind, options: dict, sockets: dict) -> bool:
    if options.get("forceInput"):
        return False
    if isinstance(kind, list) or kind in WIDGET_TYPES:
        return True
    if name in sockets:
        return "widget" in sockets[name]  # a widget converted to a socket remembers its widget
    return kind in CUSTOM_WIDGET_TYPES


def node_ids(workflow: dict, node_type: str) -> list[str]:
    return [str(n["id"]) for n in workflow["nodes"] if n["type"] == node_type]


def with_changes(prompt: dict, changes: dict[str, dict]) -> dict:
    """A copy of the prompt with some inputs replaced: {node_id: {input: value}}."""
    changed = copy.deepcopy(prompt)
    for node_id, inputs in changes.items():
        changed[node_id]["inputs"].update(inputs)
    return changed
