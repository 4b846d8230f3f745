"""The trigger-words routes on a real aiohttp server: words with their sources, pinning stored atomically.

The sidecar is Civitai Helper's `<stem>.civitai.info` (Civitai's model-version JSON with `trainedWords`).
"""

from __future__ import annotations

import asyncio
import importlib
import json

import hostile_corpus as corpus
import pytest
from aiohttp.test_utils import TestClient, TestServer
from route_harness import Folders, application


@pytest.fixture
def client(pack, tmp_path):
    routes_module = importlib.import_module(f"{pack.__name__}.nodes.routes")
    root = tmp_path / "loras"
    root.mkdir()
    (root / "ink.safetensors").write_bytes(corpus.good_bytes())
    (root / "ink.civitai.info").write_text(json.dumps({"id": 1, "trainedWords": ["inkstyle", "ink wash"]}))
    (tmp_path / "user").mkdir()
    app = application(routes_module.LoraRoutes(Folders(root, tmp_path / "user" / "hash-cache.json")))
    return app, tmp_path / "user" / "trigger_words.json"


def run(app, steps):
    async def go():
        async with TestClient(TestServer(app)) as c:
            out = []
            for method, path, body in steps:
                response = await (c.get(path) if method == "GET" else c.post(path, data=body))
                out.append((response.status, await response.json()))
            return out
    return asyncio.run(go())


def test_words_pin_and_unpin(client):
    app, store = client
    answers = run(app, [
        ("GET", "/loradeck/trigger_words?name=ink.safetensors", None),
        ("POST", "/loradeck/trigger_words", json.dumps({"name": "ink.safetensors", "words": ["my ink", "inkstyle"]})),
        ("GET", "/loradeck/trigger_words?name=ink.safetensors", None),
        ("POST", "/loradeck/trigger_words", json.dumps({"name": "ink.safetensors", "words": []})),
    ])
    (s1, first), (s2, pinned), (s3, after), (s4, unpinned) = answers
    assert (s1, s2, s3, s4) == (200, 200, 200, 200)
    assert first["words"] == ["inkstyle", "ink wash"] and first["sources"] == {"civitai.info": ["inkstyle", "ink wash"]}
    assert pinned == {"name": "ink.safetensors", "pinned": ["my ink", "inkstyle"]}
    assert after["words"] == ["my ink", "inkstyle", "ink wash"] and after["pinned"] == ["my ink", "inkstyle"]
    assert unpinned["pinned"] == [] and json.loads(store.read_text()) == {}


@pytest.mark.parametrize(("body", "status"), [
    ("not json", 400), ("[]", 400), (json.dumps({"name": "ink.safetensors", "words": "x"}), 400),
    (json.dumps({"name": "ink.safetensors", "words": ["x" * 201]}), 400),
    (json.dumps({"name": "ink.safetensors", "words": ["w"] * 101}), 400),
    (json.dumps({"name": "../secret.safetensors", "words": ["x"]}), 400),
    (json.dumps({"name": "missing.safetensors", "words": ["x"]}), 404),
    (json.dumps({"name": 5, "words": ["x"]}), 400),
])
def test_bad_pins_are_refused_and_nothing_is_written(client, body, status):
    app, store = client
    ((answer_status, answer),) = run(app, [("POST", "/loradeck/trigger_words", body)])
    assert answer_status == status and "error" in answer
    assert not store.exists()


def test_a_store_that_is_not_ours_is_kept(client):
    app, store = client
    store.write_text("[1, 2]")
    ((status, answer),) = run(app, [("POST", "/loradeck/trigger_words",
                                     json.dumps({"name": "ink.safetensors", "words": ["x"]}))])
    assert status == 409 and "not overwritten" in answer["error"]
    assert store.read_text() == "[1, 2]"
