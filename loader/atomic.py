"""Writing files so that nothing is ever half-written or silently replaced.

Every file the pack writes (caches, sidecars, presets, saved LoRAs) goes through here: the bytes go to a
temporary file in the same folder, are flushed to disk, and only then take the final name in one step.
A crash or a killed process leaves either the old file or the new one, never a mix, and at worst a
stray `.<name>.*.tmp` beside it. An existing file is replaced only when the caller says so.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

_UMASK = os.umask(0o022)
os.umask(_UMASK)


class FileExistsRefused(FileExistsError):
    """The target exists and the caller did not ask to replace it."""

    def __init__(self, path: str):
        super().__init__(f"{os.path.basename(path)} already exists; not replacing it without an explicit choice")
        self.path = path


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, *, replace: bool = False) -> Iterator[BinaryIO]:
    """A binary file object whose contents appear at `path` only when the block ends without an error.

    replace=False (the default) refuses, before writing anything and again at the final step, to
    overwrite an existing file; replace=True swaps the new contents in for the old in one step.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not replace and os.path.lexists(path):
        raise FileExistsRefused(path)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.chmod(temp, _mode_for(path))
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(temp, path, replace)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_folder(folder)


def write_bytes(path: str | os.PathLike, data: bytes, *, replace: bool = False) -> None:
    with open_atomic(path, replace=replace) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str, *, replace: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), replace=replace)


def _mode_for(path: str) -> int:
    # mkstemp makes owner-only files; the result should look like any other file the user saves.
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return 0o666 & ~_UMASK


def _publish(temp: str, path: str, replace: bool) -> None:
    if replace:
        os.replace(temp, path)
        return
    # link() fails if the name exists, so a file created meanwhile by someone else is never clobbered.
    try:
        os.link(temp, path)
    except FileExistsError:
        raise FileExistsRefused(path) from None
    except OSError:  # a filesystem without hard links: check, then rename (a narrow race remains)
        if os.path.lexists(path):
            raise FileExistsRefused(path) from None
        os.rename(temp, path)
        return
    os.unlink(temp)


def _fsync_folder(folder: str) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
