"""LoRA Deck for ComfyUI: the host entry point. It registers the nodes and the web folder, nothing else."""

import importlib.util

WEB_DIRECTORY = "./web"

# Tools such as pytest may import this folder as a package outside ComfyUI; there is nothing to register then.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
