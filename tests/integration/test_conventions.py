"""Today's host conventions on every LoRA Deck node, as the live host serves them (`/object_info` is each
V3 node's GET_NODE_INFO_V1()): the menu category of core's own LoRA loaders, "lora" finding every node, search
aliases where the host has them, and the registry metadata as the host's own pyproject parser reads it."""

from __future__ import annotations

import sys
import types

import hosting
import pytest

import nodes

OUR_NODES = {"LoraDeckLoader", "LoraDeckStack", "LoraDeckApply", "LoraDeckBlockView", "LoraDeckBake",
             "LoraDeckPrompt", "LoraDeckHooks", "LoraDeckApplyScheduled"}


def _ours(pack) -> dict[str, dict]:
    """node id -> object_info entry, for every node the host registered from this pack."""
    module = nodes.NODE_CLASS_MAPPINGS["LoraDeckLoader"].GET_NODE_INFO_V1()["python_module"]
    return {name: cls.GET_NODE_INFO_V1() for name, cls in nodes.NODE_CLASS_MAPPINGS.items()
            if hasattr(cls, "GET_NODE_INFO_V1") and cls.GET_NODE_INFO_V1()["python_module"] == module}


def test_every_node_is_under_core_lora_loaders(pack):
    infos = _ours(pack)
    assert set(infos) == OUR_NODES
    expected = f"{nodes.LoraLoader.CATEGORY}/LoRA Deck"  # "loaders/LoRA Deck" on 0.3.75 and 0.8.0
    assert {name: info["category"] for name, info in infos.items()} == dict.fromkeys(OUR_NODES, expected)


def test_category_follows_core_when_it_moves(pack, monkeypatch):
    # Newer hosts moved core's LoRA loaders to "model/loaders" (Comfy-Org/ComfyUI#14145): ours move with them.
    monkeypatch.setattr(nodes.LoraLoader, "CATEGORY", "model/loaders")
    assert {info["category"] for info in _ours(pack).values()} == {"model/loaders/LoRA Deck"}


def test_category_falls_back_when_the_host_has_no_lora_loader(pack, monkeypatch):
    schema = sys.modules[f"{pack.__name__}.nodes.schema"]
    monkeypatch.setitem(sys.modules, "nodes", types.ModuleType("nodes"))
    assert schema.category() == "loaders/LoRA Deck"


def test_searching_lora_finds_every_node(pack):
    # The frontend's node search matches the id and display name (1.32.9: Fuse keys name, display_name) and,
    # on hosts that serve them, search_aliases.
    for name, info in _ours(pack).items():
        haystack = [info["name"], info["display_name"], *(info.get("search_aliases") or [])]
        assert any("lora" in text.lower() for text in haystack), name


def test_search_aliases_reach_object_info(pack):
    schema = sys.modules[f"{pack.__name__}.nodes.schema"]
    if not schema.host_has_search_aliases():
        pytest.skip(f"ComfyUI {hosting.host_version()}'s io.Schema has no search_aliases (newer hosts have)")
    for name, info in _ours(pack).items():
        assert "lora" in info["search_aliases"], name


def test_host_reads_the_registry_metadata(pack):
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(hosting.REPO))
    assert config.project.supported_os == ["OS Independent"]
    assert config.project.supported_accelerators == ["GPU :: NVIDIA CUDA"]
    assert config.tool_comfy.icon == ""  # absent, not an empty URL in the file (tests/unit/test_registry_metadata)
    lowest = config.project.supported_comfyui_version.removeprefix(">=")
    assert tuple(map(int, lowest.split("."))) <= tuple(map(int, hosting.host_version().split(".")))
