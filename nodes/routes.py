"""HTTP routes the web UI reads, under /loradeck/ on the host's server (and /api/loradeck/, added by the host).

- GET /loradeck/list            every LoRA in the loras folders: name, size, mtime
- GET /loradeck/info?name=N     one LoRA's facts from its header (loader.info) and its hashes when known
- GET /loradeck/hash?name=N     its SHA-256 and AutoV2 short hash (hashed off the event loop, cached)
- GET /loradeck/find?sha256=H   the LoRAs whose SHA-256 (or AutoV2 prefix) is H: re-linking a moved file
- GET /loradeck/energy?name=N   each network block's share of the LoRA's weight change (reads the tensors)
- GET /loradeck/presets         block-weight presets: A1111's built-ins and the user's block_presets.txt

Names come from the browser, so every one is confined: it must be relative, must not step up ('..'),
must be a file the host lists in its loras folders (which filters out non-LoRA files), and must lie
lexically inside one of those folders. A symlink the user placed inside a folder is followed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys

from aiohttp import web

from ..loader import hashes, names, presets
from ..loader.files import LoraFileError, file_identity
from ..loader.info import block_energy, lora_facts
from . import block_presets, folders

PREFIX = "/loradeck"
MAX_NAME_CHARS = 1024
ENERGY_CACHE_SIZE = 64
_HEX = re.compile(r"^[0-9a-fA-F]{10}$|^[0-9a-fA-F]{64}$")
_log = logging.getLogger("loradeck")


class LoraFolders:
    """The host's loras folders and the LoRA names it lists in them, read at each call."""

    def roots(self) -> list[str]:
        return list(folders.lora_roots())

    def names(self) -> list[str]:
        return [n.replace("\\", "/") for n in folders.lora_names()]

    def hash_store(self) -> str | None:
        import folder_paths

        return os.path.join(folder_paths.get_user_directory(), "loradeck", "hash-cache.json")


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class LoraRoutes:
    """The route handlers, bound to one LoraFolders (tests give their own)."""

    def __init__(self, folders: LoraFolders | None = None):
        self.folders = folders or LoraFolders()
        self._cache: hashes.HashCache | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._energy: dict[tuple[str, int, int], dict] = {}

    @property
    def cache(self) -> hashes.HashCache:
        if self._cache is None:
            self._cache = hashes.HashCache(self.folders.hash_store())
        return self._cache

    def add_to(self, routes: web.RouteTableDef) -> None:
        routes.get(f"{PREFIX}/list")(self.list)
        routes.get(f"{PREFIX}/info")(self.info)
        routes.get(f"{PREFIX}/hash")(self.hash)
        routes.get(f"{PREFIX}/find")(self.find)
        routes.get(f"{PREFIX}/energy")(self.energy)
        routes.get(f"{PREFIX}/presets")(self.presets)

    def resolve(self, raw: str | None) -> tuple[str, str]:
        """(portable name, full path) of a name from the browser, or _Refused."""
        if not raw:
            raise _Refused(400, "give the LoRA as ?name=<path inside your loras folders>")
        if len(raw) > MAX_NAME_CHARS:
            raise _Refused(400, "that name is too long")
        try:
            name = names.normalise(raw)
        except names.LoraNameError as e:
            raise _Refused(400, str(e)) from None
        listed = set(self.folders.names())
        if name not in listed:
            raise _Refused(404, f"{name!r} is not a LoRA in your loras folders")
        try:
            return name, names.resolve(name, self.folders.roots(), [])
        except names.LoraNameError as e:
            raise _Refused(404, str(e)) from None

    async def list(self, request: web.Request) -> web.Response:
        entries = []
        for name in sorted(self.folders.names(), key=str.lower):
            try:
                path = names.resolve(name, self.folders.roots(), [])
                st = os.stat(path)
            except (names.LoraNameError, OSError):
                continue
            entries.append({"name": name, "size": st.st_size, "mtime": int(st.st_mtime)})
        return web.json_response({"loras": entries})

    async def info(self, request: web.Request) -> web.Response:
        try:
            name, path = self.resolve(request.query.get("name"))
        except _Refused as e:
            return _error(e.status, str(e))
        loop = asyncio.get_running_loop()
        try:
            facts = await loop.run_in_executor(None, lora_facts, path)
        except (LoraFileError, OSError, ValueError) as e:
            return web.json_response({"name": name, "error": str(e)})
        sha = self.cache.known(path)
        facts.update(name=name, sha256=sha, autov2=hashes.autov2(sha) if sha else None)
        return web.json_response(facts)

    async def energy(self, request: web.Request) -> web.Response:
        try:
            name, path = self.resolve(request.query.get("name"))
        except _Refused as e:
            return _error(e.status, str(e))
        identity = file_identity(path)
        if identity not in self._energy:
            try:
                self._energy[identity] = await asyncio.get_running_loop().run_in_executor(None, block_energy, path)
            except (LoraFileError, OSError, ValueError) as e:
                return web.json_response({"name": name, "error": str(e)})
            while len(self._energy) > ENERGY_CACHE_SIZE:
                self._energy.pop(next(iter(self._energy)))
        return web.json_response({"name": name, **self._energy[identity]})

    async def presets(self, request: web.Request) -> web.Response:
        return web.json_response({"builtin": presets.builtin(), "user": block_presets.user_presets()})

    async def hash(self, request: web.Request) -> web.Response:
        try:
            name, path = self.resolve(request.query.get("name"))
        except _Refused as e:
            return _error(e.status, str(e))
        sha = await self._hash(path)
        return web.json_response({"name": name, "sha256": sha, "autov2": hashes.autov2(sha)})

    async def find(self, request: web.Request) -> web.Response:
        wanted = (request.query.get("sha256") or "").strip()
        if not _HEX.match(wanted):
            return _error(400, "give ?sha256= as 64 hex digits (or the 10-digit AutoV2 short hash)")
        wanted = wanted.lower()
        paths = {}
        for name in sorted(self.folders.names(), key=str.lower):
            try:
                paths[name] = names.resolve(name, self.folders.roots(), [])
            except names.LoraNameError:
                continue
        # Files hashed before answer from the cache; only when none matches are the others read.
        known = {name: self.cache.known(path) for name, path in paths.items()}
        matches = [name for name, sha in known.items() if sha and sha.startswith(wanted)]
        if not matches:
            for name, path in paths.items():
                if not known[name] and (await self._hash(path)).startswith(wanted):
                    matches.append(name)
        return web.json_response({"sha256": wanted, "matches": matches})

    async def _hash(self, path: str) -> str:
        known = self.cache.known(path)
        if known:
            return known
        real = os.path.realpath(path)
        pending = self._inflight.get(real)
        if pending is None:  # one read per file, however many requests ask at once
            pending = asyncio.get_running_loop().run_in_executor(None, self.cache.get, path)
            self._inflight[real] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(real, None))
        return await pending


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


_registered = False


def register_routes() -> bool:
    """Add the routes to the running host's server once; False (and harmless) when there is no server."""
    global _registered
    if _registered:
        return True
    server = sys.modules.get("server")  # the host's server module, imported by main.py when it serves
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return False
    LoraRoutes().add_to(instance.routes)
    _registered = True
    _log.debug("LoRA Deck routes registered under %s", PREFIX)
    return True
