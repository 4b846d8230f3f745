"""The user's block-weight presets file: `<ComfyUI user folder>/loradeck/block_presets.txt`.

One `NAME:spec` per line (A1111's lbwpresets.txt format; see loader/presets.py). Read here, cached by
modification time; nothing in the pack writes it unless a user explicitly saves a preset.
"""

from __future__ import annotations

import logging
import os

import folder_paths

from ..loader import presets

log = logging.getLogger("loradeck")
_cache: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}


def path() -> str:
    return os.path.join(folder_paths.get_user_directory(), "loradeck", "block_presets.txt")


def user_presets() -> dict[str, str]:
    """The user's presets ({} when there is no file); a broken file is reported once and ignored."""
    file = path()
    try:
        stat = os.stat(file)
    except OSError:
        return {}
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _cache.get(file)
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        loaded = presets.load(file)
    except presets.PresetFileError as e:
        log.warning("LoRA Deck: block presets file ignored: %s", e)
        loaded = {}
    _cache[file] = (stamp, loaded)
    return loaded
