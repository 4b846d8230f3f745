"""The /loradeck/ routes under hostile load: many concurrent requests on loopback, bounded in count and time.

The routes run on an aiohttp server of their own, bound to 127.0.0.1, over a loras folder holding the
hostile corpus, good files and one big file. Every request gets an answer (200 with an error for a bad
file, 400/404 for a bad name, never a 500 or a dropped connection), nothing outside the folder is served,
and while a big file is being hashed the other routes keep answering quickly: nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from route_harness import Folders, application

REQUESTS = 400
CONCURRENCY = 32
TIME_LIMIT_S = 120
BIG_FILE_MB = 512
SECRET = b"SECRET-OUTSIDE-THE-LORAS-FOLDER"


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


@pytest.fixture(scope="module")
def routes_module(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.routes")


def test_every_route_on_every_corpus_file(folder, routes_module):
    """Each route once on each file of the corpus (the storm picks at random)."""
    base, root, _ = folder
    app = application(routes_module.LoraRoutes(Folders(root, base / "hash-cache-2.json")))
    names = [n for n in Folders(root, None).names() if n != "big.safetensors"]
    paths = [f"/loradeck/{route}?name={urllib.parse.quote(n, safe='')}" for n in names for route in ("info", "energy")]
    results, _, _ = asyncio.run(_storm(app, paths))
    for path, status, body, _ in results:
        assert status in (200, 400, 404), (path, status, body[:300])
        json.loads(body, parse_constant=_refuse_constant)


def test_routes_answer_a_storm_of_hostile_requests(folder, routes_module):
    base, root, canary = folder
    app = application(routes_module.LoraRoutes(Folders(root, base / "hash-cache.json")))
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


# Hashing and finding by hash off the event loop ----------------------------------------------------------

async def _get_all(app, paths):
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIME_LIMIT_S)) as session:
            async def one(path):
                async with session.get(server.make_url(path)) as response:
                    return response.status, await response.json()
            return await asyncio.gather(*(one(p) for p in paths))
    finally:
        await server.close()


def test_find_with_a_size_hashes_only_files_of_that_size(folder, routes_module, tmp_path):
    _, root, _ = folder
    listed = Folders(root, None).names()
    sizes = {name: os.path.getsize(root / name) for name in listed}
    wanted = "good3.safetensors"
    same_size = [n for n, size in sizes.items() if size == sizes[wanted]]
    assert len(same_size) < len(listed) / 2  # the size rules most of the folder out
    sha = hashlib.sha256((root / wanted).read_bytes()).hexdigest()
    routes = routes_module.LoraRoutes(Folders(root, tmp_path / "hash-cache.json"))
    (status, body), = asyncio.run(_get_all(application(routes), [f"/loradeck/find?sha256={sha}&size={sizes[wanted]}"]))
    assert (status, body["matches"]) == (200, [wanted])
    assert routes.cache.computed == len(same_size)  # every other file was left unread
    (status, body), = asyncio.run(_get_all(application(routes), [f"/loradeck/find?sha256={sha}&size={sizes[wanted]}"]))
    assert (status, body["matches"], routes.cache.computed) == (200, [wanted], len(same_size))  # from the cache
    (status, body), = asyncio.run(_get_all(application(routes), [f"/loradeck/find?sha256={sha}&size=12"]))
    assert (status, body["matches"], routes.cache.computed) == (200, [], len(same_size))
    for bad in ("-1", "12kb", "1e3"):
        (status, body), = asyncio.run(_get_all(application(routes), [f"/loradeck/find?sha256={sha}&size={bad}"]))
        assert status == 400 and "size" in body["error"]


def test_the_server_answers_while_a_big_file_is_hashed(folder, routes_module, tmp_path):
    _, root, _ = folder
    routes = routes_module.LoraRoutes(Folders(root, tmp_path / "hash-cache.json"))
    small = "good1.safetensors"
    small_sha = hashlib.sha256((root / small).read_bytes()).hexdigest()
    size = os.path.getsize(root / small)

    async def run():
        server = TestServer(application(routes), host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIME_LIMIT_S)) as session:
                async def get(path):
                    started = time.perf_counter()
                    async with session.get(server.make_url(path)) as response:
                        await response.read()
                        return response.status, time.perf_counter() - started

                big = asyncio.ensure_future(get("/loradeck/hash?name=big.safetensors"))
                await asyncio.sleep(0.2)
                others = [await get(p) for p in ("/loradeck/list", "/loradeck/info?name=good2.safetensors",
                                                  f"/loradeck/find?sha256={small_sha}&size={size}")]
                return others, big.done(), await big
        finally:
            await server.close()

    others, big_done_early, big = asyncio.run(run())
    assert not big_done_early and big[0] == 200
    assert all(status == 200 and latency < 2.0 for status, latency in others), others
    assert max(latency for _, latency in others) < big[1] / 2, (others, big)
    print(f"hash of {BIG_FILE_MB} MB: {big[1]:.1f}s; list/info/find meanwhile: "
          f"{', '.join(f'{latency * 1000:.0f} ms' for _, latency in others)}")


def test_a_file_that_vanishes_while_hashed_is_a_404(routes_module, tmp_path):
    root = tmp_path / "loras"
    root.mkdir()
    doomed = root / "doomed.safetensors"
    with open(doomed, "wb") as f:  # slow enough to hash that it is deleted halfway
        f.write(corpus.good_bytes())
        f.truncate(BIG_FILE_MB * 1024 * 1024)
    routes = routes_module.LoraRoutes(Folders(root, tmp_path / "hash-cache.json"))

    async def run():
        server = TestServer(application(routes), host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIME_LIMIT_S)) as session:
                async def get(path):
                    async with session.get(server.make_url(path)) as response:
                        return response.status, await response.json()

                hashing = asyncio.ensure_future(get("/loradeck/hash?name=doomed.safetensors"))
                await asyncio.sleep(0.3)
                assert not hashing.done()
                doomed.unlink()
                return await hashing, [await get(f"/loradeck/{route}?name=doomed.safetensors")
                                       for route in ("hash", "info", "energy")]
        finally:
            await server.close()

    (status, body), after = asyncio.run(run())
    assert status == 404 and "no longer in your loras folders" in body["error"], body
    assert routes.cache.computed == 0  # a torn read is never remembered
    assert [s for s, _ in after] == [404, 404, 404], after
