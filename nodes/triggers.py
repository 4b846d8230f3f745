"""Trigger words of the LoRAs that ran, for the nodes' trigger_words outputs (loader.trigger_words)."""

from __future__ import annotations

import os

import folder_paths

from ..loader import files, names, trigger_words
from . import folders


def store() -> str:
    return os.path.join(folder_paths.get_user_directory(), "loradeck", trigger_words.PINNED_FILE)


def for_entries(entries) -> str:
    """The words of every entry that changes anything (both strengths 0 = none), each word once, in order."""
    entries = list(entries)
    if not entries:
        return ""
    pinned = trigger_words.load_pinned(store())
    lists = []
    for entry in entries:
        if entry.strength_model == 0 and entry.strength_clip == 0:
            continue
        try:
            path = folders.resolve(entry.lora_name)
        except names.LoraNameError:
            continue  # not a file here (another pack's name): it cannot run here either, so it has no words
        lists.append(for_file(path, entry.lora_name, pinned).words)
    return trigger_words.joined(lists)


def for_file(path: str, name: str, pinned: dict[str, list[str]]) -> trigger_words.TriggerWords:
    return trigger_words.for_lora(path, name.replace("\\", "/"), _metadata(path), pinned)


def _metadata(path: str) -> dict[str, str]:
    if path.lower().endswith(files.PICKLE_SUFFIXES):
        return {}
    try:
        return files.read_header(path).metadata
    except files.LoraFileError:
        return {}
