"""LoRA Deck for ComfyUI: the host entry point. It registers the nodes and the web folder, nothing else."""

import importlib.util

WEB_DIRECTORY = "./web"

# Tools such as pytest may import this file outside ComfyUI, as a package or (when the folder's name has a dot)
# as a lone module; there is nothing to register then.
if __package__ and importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
