"""The /loradeck/ routes under hostile load: many concurrent requests on loopback, bounded in count and time.

The routes run on an aiohttp server of their own, bound to 127.0.0.1, over a loras folder holding the
hostile corpus, good files and one big file. Every request gets an answer (200 with an error for a bad
file, 400/404 for a bad name, never a 500 or a dropped connection), nothing outside the folder is served,
and while a big file is being hashed the other routes keep answering quickly: nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import random
import time
import urllib.parse

import aiohttp
import hostile_corpus as corpus
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

REQUESTS = 400
CONCURRENCY = 32
TIME_LIMIT_S = 120
BIG_FILE_MB = 512
SECRET = b"SECRET-OUTSIDE-THE-LORAS-FOLDER"


class Folders:
    """The LoraFolders interface over one test folder, listing LoRA files the way the host does."""

    def __init__(self, root, store):
        self.root, self.store = str(root), str(store)

    def roots(self):
        return [self.root]

    def names(self):
        found = []
        for folder, _, files in os.walk(self.root, followlinks=True):
            for name in files:
                if name.endswith((".safetensors", ".ckpt", ".pt")):
                    found.append(os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/"))
        return found

    def hash_store(self):
        return self.store


@pytest.fixture(scope="module")
def folder(tmp_path_factory, pack):
    base = tmp_path_factory.mktemp("routes")
    root = base / "loras"
    root.mkdir()
    (base / "secret.safetensors").write_bytes(SECRET)
    for case in [*corpus.HEADER_CASES, *corpus.CONTENT_CASES]:
        case.write(root)
    corpus.DIRECTORY_CASE.write(root)
    for i in range(8):
        (root / f"good{i}.safetensors").write_bytes(corpus.good_bytes(seed=i))
    canary = corpus.Canary(base)
    corpus.evil_pickles(root, canary)
    with open(root / "big.safetensors", "wb") as f:  # a sound header, then a half gigabyte of data
        f.write(corpus.good_bytes())
        f.truncate(BIG_FILE_MB * 1024 * 1024)
    return base, root, canary


def _requests(names: list[str]) -> list[str]:
    hostile = ["../secret.safetensors", "..%2Fsecret.safetensors", "/etc/passwd", "C:\\Windows\\win.ini",
               "\\\\server\\share\\a.safetensors", "a\x00.safetensors", "x" * 5000, "folder.safetensors",
               "missing.safetensors", "%2e%2e/secret.safetensors", ""]
    generator = random.Random(7)
    paths = []
    for _ in range(REQUESTS):
        route = generator.choice(["info", "info", "energy", "hash", "list", "find"])
        if route == "list":
            paths.append("/loradeck/list")
        elif route == "find":
            paths.append("/loradeck/find?sha256=" + generator.choice(["0" * 64, "abc", "f" * 10, "../x"]))
        else:
            name = generator.choice(names + hostile)
            paths.append(f"/loradeck/{route}?name={urllib.parse.quote(name, safe='')}")
    return paths


async def _storm(app: web.Application, paths: list[str]):
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    gate = asyncio.Semaphore(CONCURRENCY)
    results = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIME_LIMIT_S)) as session:
            async def one(path):
                async with gate:
                    started = time.perf_counter()
                    async with session.get(server.make_url(path)) as response:
                        body = await response.read()
                        results.append((path, response.status, body, time.perf_counter() - started))

            big_hash = asyncio.ensure_future(one("/loradeck/hash?name=big.safetensors"))
            await asyncio.sleep(0.05)
            # While the big file is hashed off the loop, the listing answers at once.
            started = time.perf_counter()
            async with session.get(server.make_url("/loradeck/list")) as response:
                assert response.status == 200
            list_latency = time.perf_counter() - started
            hash_was_running = not big_hash.done()
            await asyncio.gather(*(one(p) for p in paths))
            await big_hash
    finally:
        await server.close()
    return results, list_latency, hash_was_running


def _refuse_constant(name: str):
    raise AssertionError(f"{name} in a JSON answer: browsers cannot parse it")


def test_every_route_on_every_corpus_file(folder, pack):
    """Each route once on each file of the corpus (the storm picks at random)."""
    base, root, _ = folder
    routes_module = importlib.import_module(f"{pack.__name__}.nodes.routes")
    table = web.RouteTableDef()
    routes_module.LoraRoutes(Folders(root, base / "hash-cache-2.json")).add_to(table)
    app = web.Application()
    app.add_routes(table)
    names = [n for n in Folders(root, None).names() if n != "big.safetensors"]
    paths = [f"/loradeck/{route}?name={urllib.parse.quote(n, safe='')}" for n in names for route in ("info", "energy")]
    results, _, _ = asyncio.run(_storm(app, paths))
    for path, status, body, _ in results:
        assert status in (200, 400, 404), (path, status, body[:300])
        json.loads(body, parse_constant=_refuse_constant)


def test_routes_answer_a_storm_of_hostile_requests(folder, pack):
    base, root, canary = folder
    routes_module = importlib.import_module(f"{pack.__name__}.nodes.routes")
    table = web.RouteTableDef()
    routes_module.LoraRoutes(Folders(root, base / "hash-cache.json")).add_to(table)
    app = web.Application()
    app.add_routes(table)
    names = Folders(root, None).names()
    started = time.perf_counter()
    results, list_latency, hash_was_running = asyncio.run(_storm(app, _requests(names)))
    elapsed = time.perf_counter() - started
    assert len(results) == REQUESTS + 1
    statuses = {}
    for path, status, body, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
        assert status in (200, 400, 404), (path, status, body[:300])
        assert SECRET not in body, path
        json.loads(body, parse_constant=_refuse_constant)  # what a browser's JSON.parse accepts: no NaN
    assert elapsed < TIME_LIMIT_S
    assert hash_was_running and list_latency < 1.0, f"the listing waited {list_latency:.2f}s behind a hash"
    assert not canary.fired()
    big = next(r for r in results if r[0] == "/loradeck/hash?name=big.safetensors")
    assert big[1] == 200
    print(f"{len(results)} requests in {elapsed:.1f}s, statuses {statuses}, list latency {list_latency * 1000:.0f} ms")
