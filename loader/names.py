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
    if name is not None and not isinstance(name, str):
        raise LoraNameError(f"the LoRA name should be text, not {type(name).__name__}")
    if not name or not name.strip():
        raise LoraNameError("no LoRA name given")
    if "\x00" in name:
        raise LoraNameError(f"the LoRA name {shown(name)} contains a NUL byte")
    posix = name.strip().replace("\\", "/")
    if PurePosixPath(posix).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise LoraNameError(f"the LoRA name {shown(name)} is an absolute path; names are relative to a loras folder")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LoraNameError(f"the LoRA name {shown(name)} steps out of the loras folders ('..')")
    if not parts:
        raise LoraNameError(f"the LoRA name {shown(name)} names a folder, not a file")
    return "/".join(parts)


def shown(name: str, limit: int = 120) -> str:
    """The name as messages quote it: escaped, and shortened when a workflow carries something huge."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resolve(name: str, roots: list[str], available: list[str] | None = None) -> str:
    """The full path of `name` inside one of `roots`, or LoraNameError with suggestions from `available`."""
    relative = normalise(name)
    for root in roots:
        candidate = os.path.join(root, *relative.split("/"))
        if os.path.isfile(candidate) and _inside(root, candidate, relative):
            return candidate
    for root in roots:
        if os.path.isdir(os.path.join(root, *relative.split("/"))):
            raise LoraNameError(f"the LoRA name {shown(name)} is a folder in your loras folders, not a file")
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
    message = f"LoRA not found: {shown(name)} is not in your loras folders"
    if suggestions:
        message += "; did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
    elif not available:
        message += " (they hold no LoRA files)"
    return message


def _stem(name: str) -> str:
    return os.path.splitext(name.rsplit("/", 1)[-1])[0].lower()


def resolve_tag_name(name: str, available: list[str], alias_of=None) -> str:
    """The relative name (as in `available`) of the file a prompt tag names; LoraNameError otherwise.

    A tag names a file as A1111 users write it: its relative path (with or without the extension),
    its file stem anywhere in the loras folders, or the alias A1111 reads from the file's metadata
    (`ss_output_name`; `alias_of(relative_name)` returns it, or None). A path with its extension names
    exactly that file. Otherwise every file that matches in any of those ways is a candidate: one is
    the answer, two or more are an error that lists each with how it matched (never a first match)."""
    wanted = normalise(name)
    portable = {a.replace("\\", "/"): a for a in available}
    if wanted in portable:
        return portable[wanted]
    found: dict[str, list[str]] = {}
    for relative, original in portable.items():
        without_extension = os.path.splitext(relative)[0]
        if without_extension == wanted:
            found.setdefault(original, []).append("path")
        elif "/" not in wanted and _stem_exact(relative) == wanted:
            found.setdefault(original, []).append("file name")
    if alias_of is not None and "/" not in wanted:
        for original in portable.values():
            alias = alias_of(original)
            if isinstance(alias, str) and alias.strip() == wanted:
                found.setdefault(original, []).append("alias (ss_output_name)")
    if len(found) == 1:
        return next(iter(found))
    if found:
        listed = "; ".join(f"{c!r} (by {' and '.join(how)})" for c, how in sorted(found.items()))
        example = min(found).replace("\\", "/")
        raise LoraNameError(f"the LoRA name {shown(name)} matches {len(found)} files: {listed}. Write the "
                            f"file's path in the tag (e.g. <lora:{example}:1>) to choose one")
    raise LoraNameError(missing_message(name, available))


def _stem_exact(name: str) -> str:
    return os.path.splitext(name.rsplit("/", 1)[-1])[0]
