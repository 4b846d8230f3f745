"""SHA-256 of LoRA files, computed once per file version and remembered across restarts.

A file version (loader/versions.py: size, mtime, ctime, inode, device and a content fingerprint) is the
key: a file edited or replaced in place, even with its old size and mtime, is hashed again; a renamed or
moved one is hashed under its new path. The cache can persist to a JSON file, written atomically, so a
2 GB file is read once, not at every start; entries of an older format are dropped (hashed again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading

from . import atomic, versions
from .files import FileChangedError, file_identity

CHUNK_BYTES = 4 * 1024 * 1024
STORE_FORMAT = 2


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
        self._by_identity: dict[versions.FileVersion, str] = {}
        self._path_locks: dict[str, threading.Lock] = {}
        self.computed = 0  # how many files were actually read (tests count re-reads with it)
        self._load()

    def known(self, path: str | os.PathLike) -> str | None:
        """The cached SHA-256 of the file as it is now, or None without reading the file."""
        try:
            identity = file_identity(path)
        except (OSError, ValueError):  # LoraFileError too: vanished, unreadable, being written
            return None
        with self._lock:
            return self._by_identity.get(identity)

    def get(self, path: str | os.PathLike) -> str:
        """The file's SHA-256, read from disk only when this version of the file was never hashed.

        A file that changes while it is hashed is hashed again; one that keeps changing is refused
        (FileChangedError): a torn hash never vouches for a file.
        """
        with self._reading(os.path.realpath(path)):  # threads asking for one file at once read it once
            for _ in range(3):
                version = file_identity(path)
                with self._lock:
                    cached = self._by_identity.get(version)
                if cached:
                    return cached
                sha = sha256_of(version.path)
                if file_identity(path) == version:
                    self._remember(version, sha)
                    return sha
        raise FileChangedError(str(path))

    def _reading(self, real: str) -> threading.Lock:
        with self._lock:
            return self._path_locks.setdefault(real, threading.Lock())

    def _remember(self, version: versions.FileVersion, sha: str) -> None:
        with self._lock:
            for older in [v for v in self._by_identity if v.path == version.path]:
                del self._by_identity[older]  # that path's earlier contents are gone
            self._by_identity[version] = sha
            self.computed += 1
            self._save_locked()

    def _load(self) -> None:
        if not self._store or not os.path.isfile(self._store):
            return
        try:
            with open(self._store, encoding="utf-8") as f:
                stored = json.load(f)
            if not isinstance(stored, dict) or stored.get("format") != STORE_FORMAT:
                return  # an older cache vouched by size and mtime only: not trusted, hashed again
            for version, sha in stored["entries"]:
                if isinstance(sha, str) and len(sha) == 64:
                    self._by_identity[versions.FileVersion.from_json(version)] = sha
        except (OSError, ValueError, TypeError, KeyError):
            self._by_identity.clear()  # a damaged cache is only a cache: start over

    def _save_locked(self) -> None:
        if not self._store:
            return
        folder = os.path.dirname(self._store) or "."
        os.makedirs(folder, exist_ok=True)
        entries = [[version.to_json(), sha] for version, sha in self._by_identity.items()]
        stored = {"format": STORE_FORMAT, "entries": entries}
        # Our own cache file, so replacing it is always meant; one that cannot be saved is recomputed next time.
        with contextlib.suppress(OSError):
            atomic.write_text(self._store, json.dumps(stored), replace=True)
