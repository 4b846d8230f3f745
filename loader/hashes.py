"""SHA-256 of LoRA files, computed once per file version and remembered across restarts.

A file version is its identity (real path, size, mtime_ns): a file edited or replaced in place is hashed
again, a renamed or moved one is hashed under its new path. The cache can persist to a JSON file, written
atomically, so a 2 GB file is read once, not at every start.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading

from .files import file_identity

CHUNK_BYTES = 4 * 1024 * 1024


def autov2(sha256: str) -> str:
    """The short hash A1111 and Civitai show ("AutoV2"): the first ten hex digits of the file's SHA-256."""
    return sha256[:10].upper()


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    """Thread-safe map from a file version to its SHA-256; `store` is the optional JSON file behind it."""

    def __init__(self, store: str | os.PathLike | None = None):
        self._store = str(store) if store else None
        self._lock = threading.Lock()
        self._by_identity: dict[tuple[str, int, int], str] = {}
        self.computed = 0  # how many files were actually read (tests count re-reads with it)
        self._load()

    def known(self, path: str | os.PathLike) -> str | None:
        """The cached SHA-256 of the file as it is now, or None without reading the file."""
        try:
            identity = file_identity(path)
        except OSError:
            return None
        with self._lock:
            return self._by_identity.get(identity)

    def get(self, path: str | os.PathLike) -> str:
        """The file's SHA-256, read from disk only when this version of the file was never hashed."""
        identity = file_identity(path)
        with self._lock:
            cached = self._by_identity.get(identity)
        if cached:
            return cached
        sha = sha256_of(identity[0])
        if file_identity(path) != identity:  # changed while we read it: do not remember a torn hash
            return sha
        with self._lock:
            self._by_identity[identity] = sha
            self.computed += 1
            self._save_locked()
        return sha

    def _load(self) -> None:
        if not self._store or not os.path.isfile(self._store):
            return
        try:
            with open(self._store, encoding="utf-8") as f:
                entries = json.load(f)
            for real, size, mtime_ns, sha in entries:
                if isinstance(sha, str) and len(sha) == 64:
                    self._by_identity[(str(real), int(size), int(mtime_ns))] = sha
        except (OSError, ValueError, TypeError):
            self._by_identity.clear()  # a damaged cache is only a cache: start over

    def _save_locked(self) -> None:
        if not self._store:
            return
        folder = os.path.dirname(self._store) or "."
        os.makedirs(folder, exist_ok=True)
        entries = [[*identity, sha] for identity, sha in self._by_identity.items()]
        fd, temp = tempfile.mkstemp(prefix=".hashes-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entries, f)
            os.replace(temp, self._store)
        except OSError:
            if os.path.exists(temp):
                os.unlink(temp)
