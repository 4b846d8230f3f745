"""The host's loras folders, and names from workflows resolved strictly inside them."""

from __future__ import annotations

import folder_paths

from ..loader import names


def lora_names() -> list[str]:
    return folder_paths.get_filename_list("loras")


def lora_roots() -> list[str]:
    return folder_paths.get_folder_paths("loras")


def resolve(name: str) -> str:
    """Full path of a LoRA named by a workflow; LoraNameError (with close matches) when it is not here."""
    return names.resolve(name, lora_roots(), lora_names())


def validation_error(name: str) -> bool | str:
    """True when the name resolves, else the message the host shows before the workflow runs."""
    try:
        resolve(name)
    except names.LoraNameError as e:
        return str(e)
    return True
