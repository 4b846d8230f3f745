"""The host's loras folders, and names from workflows resolved strictly inside them."""

from __future__ import annotations

import folder_paths

from ..loader import files, names


def lora_names() -> list[str]:
    return folder_paths.get_filename_list("loras")


def lora_roots() -> list[str]:
    return folder_paths.get_folder_paths("loras")


def resolve(name: str) -> str:
    """Full path of a LoRA named by a workflow; LoraNameError (with close matches) when it is not here."""
    return names.resolve(name, lora_roots(), lora_names())


def resolve_checked(name: str) -> str:
    """resolve(), plus the file's header validated (no tensor data read): a broken file stops the workflow
    before it runs, shown on the node without a traceback. Pickles are only ever opened when the node runs."""
    path = resolve(name)
    if not path.lower().endswith(files.PICKLE_SUFFIXES):
        files.read_header(path)
    return path


def validation_error(name: str) -> bool | str:
    """True when the name resolves to a readable file, else the message the host shows before the workflow runs."""
    try:
        resolve_checked(name)
    except (names.LoraNameError, files.LoraFileError) as e:
        return str(e)
    return True
