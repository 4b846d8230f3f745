"""HTTP routes the web UI reads, under /loradeck/ on the host's server (and /api/loradeck/, added by the host).

- GET /loradeck/list            every LoRA in the loras folders: name, size, mtime, preview (a sidecar image)
- GET /loradeck/info?name=N     one LoRA's facts from its header (loader.info) and its hashes when known
- GET /loradeck/hash?name=N     its SHA-256 and AutoV2 short hash (hashed off the event loop, cached)
- GET /loradeck/find?sha256=H   the LoRAs whose SHA-256 (or AutoV2 prefix) is H: re-linking a moved file
- GET /loradeck/energy?name=N   each network block's share of the LoRA's weight change (reads the tensors)
- GET /loradeck/preview?name=N  its preview image from a sidecar beside it (loader/previews.py), or 404
- GET /loradeck/presets         block-weight presets: A1111's built-ins and the user's block_presets.txt
- GET /loradeck/trigger_words?name=N   its trigger words, their sources and the user's pinned ones
- POST /loradeck/trigger_words  {"name": N, "words": [text, …]} pins the words (an empty list unpins), stored
                                atomically in user/loradeck/trigger_words.json beside the hash cache
- POST /loradeck/spec           how a block-weight spec reads, for the block editor (loader.spec_view):
                                {"spec": text, "layout": "sd1"|"sdxl"|"flux"|"lora" (optional),
                                 "lora": name (optional; needed for "lora")} -> the layout's slots, each slot's
                                ratio, the grammar's reading, whether sliders hold it, or an error and its
                                character; a request that is not of that form gets a 400
- POST /loradeck/prompt_tags    {"text": prompt} -> how LoraDeckPrompt reads its tags: each tag as written, its
                                character, the file it resolves to (or the error naming the candidates) and its
                                model/clip strengths and blocks; a malformed tag is the answer's "error"

Listing, hashing and finding by hash touch the disk, so they run off the event loop. `find` takes the
file's size when the row knows it (`&size=N`) and hashes only files of that size; without it, files whose
hash is cached answer first and the rest are hashed one by one off the loop. A file that vanished after
the host listed it answers 404.

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
import threading

from aiohttp import web

from ..loader import hashes, names, presets, previews, prompt_tags, spec_view, trigger_words
from ..loader.files import LoraFileError, file_identity
from ..loader.info import block_energy, lora_facts
from ..loader.versions import FileVersion
from . import block_presets, folders, triggers
from .route_requests import Refused, error_response, json_object, spec_request, vanished_is_404

PREFIX = "/loradeck"
MAX_NAME_CHARS = 1024
ENERGY_CACHE_SIZE = 64
MAX_PINNED_WORDS = 100
MAX_PROMPT_CHARS = 100_000
_HEX = re.compile(r"^[0-9a-fA-F]{10}$|^[0-9a-fA-F]{64}$")
_log = logging.getLogger("loradeck")


class LoraFolders:
    """The host's loras folders and the LoRA names it lists in them, read at each call."""

    def roots(self) -> list[str]:
        return list(folders.lora_roots())

    def names(self) -> list[str]:
        return [n.replace("\\", "/") for n in folders.lora_names()]

    def hash_cache(self) -> hashes.HashCache:
        return folders.hash_cache()  # the one the nodes use: one hash per file version, one store

    def trigger_store(self) -> str:
        return triggers.store()

    def alias_of(self, name: str) -> str | None:
        return folders.alias_of(name)  # A1111's alias of a LoRA (ss_output_name), as the prompt node reads it


class LoraRoutes:
    """The route handlers, bound to one LoraFolders (tests give their own)."""

    def __init__(self, folders: LoraFolders | None = None):
        self.folders = folders or LoraFolders()
        self._cache: hashes.HashCache | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._energy: dict[FileVersion, dict] = {}
        self._lora_maps: dict[FileVersion, tuple] = {}
        self._pin_lock = threading.Lock()

    @property
    def cache(self) -> hashes.HashCache:
        if self._cache is None:
            self._cache = self.folders.hash_cache()
        return self._cache

    def add_to(self, routes: web.RouteTableDef) -> None:
        routes.get(f"{PREFIX}/list")(self.list)
        routes.get(f"{PREFIX}/info")(self.info)
        routes.get(f"{PREFIX}/hash")(self.hash)
        routes.get(f"{PREFIX}/find")(self.find)
        routes.get(f"{PREFIX}/energy")(self.energy)
        routes.get(f"{PREFIX}/presets")(self.presets)
        routes.post(f"{PREFIX}/spec")(self.spec)
        routes.get(f"{PREFIX}/preview")(self.preview)
        routes.get(f"{PREFIX}/trigger_words")(self.trigger_words)
        routes.post(f"{PREFIX}/trigger_words")(self.pin_trigger_words)
        routes.post(f"{PREFIX}/prompt_tags")(self.prompt_tags)

    def resolve(self, raw: str | None) -> tuple[str, str]:
        """(portable name, full path) of a name from the browser, or Refused."""
        if not raw:
            raise Refused(400, "give the LoRA as ?name=<path inside your loras folders>")
        if len(raw) > MAX_NAME_CHARS:
            raise Refused(400, "that name is too long")
        try:
            name = names.normalise(raw)
        except names.LoraNameError as e:
            raise Refused(400, str(e)) from None
        listed = set(self.folders.names())
        if name not in listed:
            raise Refused(404, f"{name!r} is not a LoRA in your loras folders")
        try:
            return name, names.resolve(name, self.folders.roots(), [])
        except names.LoraNameError as e:
            raise Refused(404, str(e)) from None

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"loras": await asyncio.to_thread(self._listing)})

    def _listing(self) -> list[dict]:
        entries = []
        for name, path in self._paths().items():
            try:
                st = os.stat(path)
            except OSError:
                continue
            entries.append({"name": name, "size": st.st_size, "mtime": int(st.st_mtime),
                            "preview": previews.preview_of(path) is not None})
        return entries

    def _paths(self) -> dict[str, str]:
        """name -> full path of every listed LoRA that is still there, sorted by name."""
        paths = {}
        for name in sorted(self.folders.names(), key=str.lower):
            try:
                paths[name] = names.resolve(name, self.folders.roots(), [])
            except names.LoraNameError:
                continue
        return paths

    async def info(self, request: web.Request) -> web.Response:
        try:
            name, path = await self._resolved(request.query.get("name"))
            facts = await asyncio.to_thread(vanished_is_404, lora_facts, path)
        except Refused as e:
            return error_response(e.status, str(e))
        except (LoraFileError, OSError, ValueError) as e:
            return web.json_response({"name": name, "error": str(e)})
        sha = await asyncio.to_thread(self.cache.known, path)
        facts["preview"] = await asyncio.to_thread(previews.preview_of, path) is not None
        facts.update(name=name, sha256=sha, autov2=hashes.autov2(sha) if sha else None)
        return web.json_response(facts)

    async def energy(self, request: web.Request) -> web.Response:
        try:
            name, path = await self._resolved(request.query.get("name"))
            identity = await asyncio.to_thread(vanished_is_404, file_identity, path)
            if identity not in self._energy:
                self._energy[identity] = await asyncio.to_thread(vanished_is_404, block_energy, path)
        except Refused as e:
            return error_response(e.status, str(e))
        except (LoraFileError, OSError, ValueError) as e:
            return web.json_response({"name": name, "error": str(e)})
        while len(self._energy) > ENERGY_CACHE_SIZE:
            self._energy.pop(next(iter(self._energy)))
        return web.json_response({"name": name, **self._energy[identity]})

    async def preview(self, request: web.Request) -> web.StreamResponse:
        """The LoRA's preview image from a sidecar beside it (loader/previews.py), or 404."""
        try:
            name, path = await self._resolved(request.query.get("name"))
        except Refused as e:
            return error_response(e.status, str(e))
        image = await asyncio.to_thread(previews.preview_of, path)
        if image is None:
            return error_response(404, f"{name!r} has no preview image beside it")
        return web.FileResponse(image, headers={"Content-Type": previews.content_type(image),
                                                "Cache-Control": "no-cache"})

    async def presets(self, request: web.Request) -> web.Response:
        return web.json_response({"builtin": presets.builtin(), "user": block_presets.user_presets()})

    async def hash(self, request: web.Request) -> web.Response:
        try:
            name, path = await self._resolved(request.query.get("name"))
            sha = await self._hash(path)
            size = vanished_is_404(os.path.getsize, path)
        except Refused as e:
            return error_response(e.status, str(e))
        except (LoraFileError, OSError) as e:  # unreadable, or changed on disk while it was hashed
            return error_response(409, str(e))
        return web.json_response({"name": name, "sha256": sha, "autov2": hashes.autov2(sha), "size": size})

    async def find(self, request: web.Request) -> web.Response:
        wanted = (request.query.get("sha256") or "").strip()
        if not _HEX.match(wanted):
            return error_response(400, "give ?sha256= as 64 hex digits (or the 10-digit AutoV2 short hash)")
        size = (request.query.get("size") or "").strip()
        if size and not size.isdigit():
            return error_response(400, "give &size= as the file's size in bytes (digits only), or leave it out")
        wanted = wanted.lower()
        known = await asyncio.to_thread(self._candidates, int(size) if size else None)
        # Files hashed before answer from the cache; only when none matches are the others read.
        matches = [name for name, (_, sha) in known.items() if sha and sha.startswith(wanted)]
        if not matches:
            for name, (path, sha) in known.items():
                if sha:
                    continue
                try:
                    if (await self._hash(path)).startswith(wanted):
                        matches.append(name)
                except (Refused, LoraFileError, OSError):  # gone, unreadable or rewritten since it was listed
                    continue
        return web.json_response({"sha256": wanted, "matches": matches})

    def _candidates(self, size: int | None) -> dict[str, tuple[str, str | None]]:
        """name -> (path, cached SHA-256 or None) of the listed files that can hold the wanted bytes."""
        found = {}
        for name, path in self._paths().items():
            try:
                if size is not None and os.path.getsize(path) != size:
                    continue
            except OSError:
                continue
            found[name] = (path, self.cache.known(path))
        return found

    async def spec(self, request: web.Request) -> web.Response:
        try:
            text, layout, lora = spec_request(await json_object(request))
            path = (await self._resolved(lora))[1] if lora is not None else None
            own = await self._lora_blocks(path) if path else None
        except Refused as e:
            return error_response(e.status, str(e))
        except (LoraFileError, OSError, ValueError) as e:
            if layout == spec_view.LORA_LAYOUT:
                return error_response(422, f"the LoRA's blocks cannot be read: {e}")
            own = None  # a named layout needs nothing from the file
        if layout == spec_view.LORA_LAYOUT and own is None:
            return error_response(400, 'layout "lora" reads the blocks of a LoRA: give its name as "lora"')
        answer = await asyncio.to_thread(spec_view.editor_answer, text, layout, own, block_presets.user_presets())
        return web.json_response(answer)

    def _trigger_store(self) -> str:
        return self.folders.trigger_store()

    async def trigger_words(self, request: web.Request) -> web.Response:
        try:
            name, path = await self._resolved(request.query.get("name"))
            found = await asyncio.to_thread(vanished_is_404, lambda p: triggers.for_file(
                p, name, trigger_words.load_pinned(self._trigger_store())), path)
        except Refused as e:
            return error_response(e.status, str(e))
        return web.json_response({"name": name, "words": found.words, "sources": found.sources,
                                  "notes": found.notes, "pinned": found.sources.get("pinned", [])})

    async def pin_trigger_words(self, request: web.Request) -> web.Response:
        try:
            body = await json_object(request, '{"name": LoRA name, "words": [text, …]}')
            words = body.get("words")
            if (not isinstance(words, list) or len(words) > MAX_PINNED_WORDS
                    or not all(isinstance(w, str) and len(w) <= trigger_words.MAX_WORD_CHARS for w in words)):
                raise Refused(400, f'"words" is a list of at most {MAX_PINNED_WORDS} texts of at most '
                                    f"{trigger_words.MAX_WORD_CHARS} characters")
            name, _ = await self._resolved(body.get("name") if isinstance(body.get("name"), str) else None)
            pinned = await asyncio.to_thread(self._pin, name, words)
        except Refused as e:
            return error_response(e.status, str(e))
        except (OSError, ValueError) as e:
            return error_response(409, f"the pinned words were not saved: {e}")
        return web.json_response({"name": name, "pinned": pinned.get(name, [])})

    async def prompt_tags(self, request: web.Request) -> web.Response:
        try:
            body = await json_object(request, '{"text": prompt text}')
            text = body.get("text")
            if not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS:
                raise Refused(400, f'"text" is the prompt, a text of at most {MAX_PROMPT_CHARS} characters')
        except Refused as e:
            return error_response(e.status, str(e))
        return web.json_response(await asyncio.to_thread(self._read_tags, text))

    def _read_tags(self, text: str) -> dict:
        """LoraDeckPrompt's reading of the text: each tag with its file (or why none) and strengths."""
        try:
            _, tags = prompt_tags.parse(text)
        except prompt_tags.PromptTagError as e:
            return {"tags": [], "error": str(e), "position": e.position}
        available = self.folders.names()
        alias_of = getattr(self.folders, "alias_of", None)
        answer = []
        for tag in tags:
            read = {"tag": tag.text, "position": tag.position, "name": tag.name, "model": tag.unet,
                    "clip": tag.te, "blocks": tag.blocks, "start": tag.start, "stop": tag.stop}
            try:
                read["file"] = names.resolve_tag_name(tag.name, available, alias_of).replace("\\", "/")
            except names.LoraNameError as e:
                read["file"], read["error"] = None, str(e)
            answer.append(read)
        return {"tags": answer, "error": None}

    def _pin(self, name: str, words: list[str]) -> dict[str, list[str]]:
        with self._pin_lock:  # one read-modify-write of the store at a time (in the worker thread)
            return trigger_words.pin(self._trigger_store(), name, words)

    async def _lora_blocks(self, path: str):
        """(base, block map) from the LoRA's module names, read off the loop once per file version."""
        identity = await asyncio.to_thread(vanished_is_404, file_identity, path)
        if identity not in self._lora_maps:
            self._lora_maps[identity] = await asyncio.to_thread(vanished_is_404, spec_view.lora_blocks, path)
            while len(self._lora_maps) > ENERGY_CACHE_SIZE:
                self._lora_maps.pop(next(iter(self._lora_maps)))
        return self._lora_maps[identity]

    async def _resolved(self, raw: str | None) -> tuple[str, str]:
        # The host's listing may walk the folders (its cache expires when they change): off the loop.
        return await asyncio.to_thread(self.resolve, raw)

    async def _hash(self, path: str) -> str:
        known = await asyncio.to_thread(self.cache.known, path)
        if known:
            return known
        real = os.path.realpath(path)
        pending = self._inflight.get(real)
        if pending is None:  # one read per file, however many requests ask at once
            pending = asyncio.ensure_future(asyncio.to_thread(vanished_is_404, self.cache.get, path))
            self._inflight[real] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(real, None))
        return await asyncio.shield(pending)


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
