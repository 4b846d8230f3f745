"""LoRA Deck's nodes, registered with the host through the V3 extension entry point."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension

from . import bake_node, block_view, lora_nodes, prompt_node, routes, schedule_nodes


class LoraDeckExtension(ComfyExtension):
    async def get_node_list(self):
        return [*lora_nodes.NODES, *block_view.NODES, *prompt_node.NODES, *bake_node.NODES,
                *schedule_nodes.NODES]


async def comfy_entrypoint() -> LoraDeckExtension:
    routes.register_routes()  # the web UI's /loradeck/ routes, when the host is serving
    return LoraDeckExtension()
