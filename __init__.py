"""LoRA Deck for ComfyUI: the host entry point. It registers the nodes and the web folder, nothing else."""

from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
