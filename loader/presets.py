"""Named block-weight presets: A1111's defaults (exact vectors) and a user presets file.

The file format is A1111's `lbwpresets.txt`: one `NAME:spec` per line, where spec is anything the
block-weight grammar reads (a positional vector, assignments, elemental directives separated by `;`).
Lines starting with `#` and text after ` #` are comments. The file is only read here; `save` writes it
(atomically) when a user explicitly asks for a preset to be stored.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

MAX_FILE_BYTES = 1024 * 1024
MAX_PRESETS = 2000
NAME = re.compile(r"^[A-Za-z0-9_.+\-]{1,64}$")


def _v(*values: float) -> str:
    return ",".join(f"{v:g}" for v in values)


# A1111 lora-block-weight DEF_WEIGHT_PRESET, value for value (17-value SD layout, FLUXALL 61).
A1111_PRESETS: dict[str, str] = {
    "NONE": _v(*[0] * 17),
    "ALL": _v(*[1] * 17),
    "INS": _v(1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    "IND": _v(1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    "INALL": _v(1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    "MIDD": _v(1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),
    "OUTD": _v(1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0),
    "OUTS": _v(1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1),
    "OUTALL": _v(1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1),
    "ALL0.5": _v(*[0.5] * 17),
    "FLUXALL": _v(*[1] * 61),
}


class PresetFileError(ValueError):
    """A presets file that cannot be used; the message names the file, line and problem."""


def builtin() -> dict[str, str]:
    return dict(A1111_PRESETS)


def load(path: str | os.PathLike | None) -> dict[str, str]:
    """User presets from `path` (none when the path is empty or the file does not exist)."""
    if not path or not os.path.isfile(path):
        return {}
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise PresetFileError(f"{Path(path).name}: {size} bytes; presets files are limited to "
                              f"{MAX_FILE_BYTES}")
    with open(path, "rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PresetFileError(f"{Path(path).name}: not UTF-8 text ({e})") from None
    return parse_text(text, Path(path).name)


def parse_text(text: str, source: str = "presets") -> dict[str, str]:
    presets: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        name, sep, spec = line.partition(":")
        name, spec = name.strip(), spec.strip()
        if not sep or not NAME.match(name) or not spec:
            raise PresetFileError(f"{source} line {number}: expected NAME:spec (NAME of letters, digits, "
                                  f"_ . + -), got {line[:60]!r}")
        presets[name] = spec
        if len(presets) > MAX_PRESETS:
            raise PresetFileError(f"{source}: more than {MAX_PRESETS} presets")
    return presets


def save(path: str | os.PathLike, name: str, spec: str) -> None:
    """Add or replace one preset in the user's file, keeping every other line; atomic (temp + rename)."""
    if not NAME.match(name):
        raise PresetFileError(f"preset name {name!r}: use 1-64 letters, digits, _ . + -")
    spec = " ".join(spec.split())
    if not spec:
        raise PresetFileError(f"preset {name!r}: the spec is empty")
    lines = []
    if os.path.isfile(path):
        load(path)  # refuses to rewrite a file it cannot read
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    entry = f"{name}:{spec}"
    replaced = False
    for i, line in enumerate(lines):
        if line.split(":", 1)[0].strip() == name and not line.lstrip().startswith("#"):
            lines[i], replaced = entry, True
    if not replaced:
        lines.append(entry)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".presets-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
