"""What every LoRA Deck node shares in its schema, read from the live host: the menu category and search aliases.

The category is the one the host's own LoRA loader uses (`nodes.LoraLoader.CATEGORY`: "loaders" on ComfyUI
0.3.75 and 0.8.0, "model/loaders" on newer hosts), with "LoRA Deck" under it, so the pack sits next to core's
LoRA loaders on every host. Only the menu follows the host; node ids and input names never change.
Search aliases are passed where the host's `io.Schema` has the field (newer hosts); elsewhere the node ids
and display names, which all contain "LoRA", are what the frontend's search matches.
"""

from __future__ import annotations

import dataclasses
import sys

from comfy_api.latest import io

PACK_MENU = "LoRA Deck"
FALLBACK_CORE_CATEGORY = "loaders"  # core LoraLoader's category on 0.3.75 and 0.8.0


def core_lora_category() -> str:
    """The live host's category for its own LoRA loader, or "loaders" when the host does not say."""
    host_nodes = sys.modules.get("nodes")  # the host's nodes.py, already imported when the host loads this pack
    category = getattr(getattr(host_nodes, "LoraLoader", None), "CATEGORY", None)
    if isinstance(category, str) and category.strip("/ "):
        return category.strip("/ ")
    return FALLBACK_CORE_CATEGORY


def category() -> str:
    return f"{core_lora_category()}/{PACK_MENU}"


def host_has_search_aliases() -> bool:
    return "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}


def schema(*, search_aliases: list[str], **fields) -> io.Schema:
    """An `io.Schema` in the pack's category, with search aliases where the live host accepts them."""
    if host_has_search_aliases():
        fields["search_aliases"] = list(search_aliases)
    return io.Schema(category=category(), **fields)
