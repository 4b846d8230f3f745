"""LoRA names from workflows, resolved only inside the loras folders.

A shared workflow may name any path. We accept only relative names without parent steps, in either
separator style, that resolve to a file under one of the configured folders (a symlink the user placed
inside a folder is the user's choice and is followed). A missing file is an error that suggests close
matches; a different file is never loaded in its place.
"""

from __future__ import annotations

import difflib
import os
from pathlib import PurePosixPath, PureWindowsPath


class LoraNameError(ValueError):
    """A LoRA name that cannot be resolved; the message names it and suggests close matches."""


def normalise(name: str) -> str:
    """The portable form of a name: forward slashes, no leading './'."""
    if not isinstance(name, str) or not name.strip():
        raise LoraNameError("no LoRA name given")
    if "\x00" in name:
        raise LoraNameError(f"the LoRA name {name!r} contains a NUL byte")
    posix = name.strip().replace("\\", "/")
    if PurePosixPath(posix).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise LoraNameError(f"the LoRA name {name!r} is an absolute path; names are relative to a loras folder")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LoraNameError(f"the LoRA name {name!r} steps out of the loras folders ('..')")
    return "/".join(parts)


def resolve(name: str, roots: list[str], available: list[str] | None = None) -> str:
    """The full path of `name` inside one of `roots`, or LoraNameError with suggestions from `available`."""
    relative = normalise(name)
    for root in roots:
        candidate = os.path.join(root, *relative.split("/"))
        if os.path.isfile(candidate) and _inside(root, candidate, relative):
            return candidate
    raise LoraNameError(missing_message(name, available or []))


def _inside(root: str, candidate: str, relative: str) -> bool:
    # Symlinks the user placed inside the folder are followed; the name itself may not climb out.
    lexical = os.path.normpath(os.path.join(os.path.abspath(root), *relative.split("/")))
    return lexical.startswith(os.path.abspath(root) + os.sep)


def missing_message(name: str, available: list[str]) -> str:
    portable = [a.replace("\\", "/") for a in available]
    by_stem: dict[str, list[str]] = {}
    for candidate in portable:
        by_stem.setdefault(_stem(candidate), []).append(candidate)
    # Same file name in another folder first (a moved file), then names that read alike.
    close = difflib.get_close_matches(_stem(name.replace("\\", "/")), list(by_stem), n=3, cutoff=0.6)
    suggestions = [c for stem in close for c in by_stem[stem]][:3]
    message = f"LoRA not found: {name!r} is not in your loras folders"
    if suggestions:
        message += "; did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
    elif not available:
        message += " (they hold no LoRA files)"
    return message


def _stem(name: str) -> str:
    return os.path.splitext(name.rsplit("/", 1)[-1])[0].lower()
