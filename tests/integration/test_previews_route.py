"""Preview images on a real aiohttp server: from the sidecars beside a LoRA, in the order A1111, Civitai
Helper and LoRA Manager leave them, never from outside the LoRA's folder and never fetched.

Sidecar formats: `<stem>.preview.png` (A1111 / Civitai Helper), `<stem>.webp` (A1111 reads `<stem>.<ext>`),
LoRA Manager's `<stem>.metadata.json` with `preview_url` (a local path it wrote, or a remote address).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os

import hostile_corpus as corpus
import pytest
from aiohttp.test_utils import TestClient, TestServer
from route_harness import Folders, application

PNG = b"\x89PNG\r\n\x1a\n" + b"png-bytes"
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"webp-bytes"


@pytest.fixture
def app(pack, tmp_path):
    routes_module = importlib.import_module(f"{pack.__name__}.nodes.routes")
    root = tmp_path / "loras"
    root.mkdir()
    for stem in ("ink", "wash", "manager", "remote", "none", "outside", "linked"):
        (root / f"{stem}.safetensors").write_bytes(corpus.good_bytes())
    (root / "ink.preview.png").write_bytes(PNG)
    (root / "ink.webp").write_bytes(WEBP)  # the .preview. sidecar comes first
    (root / "wash.webp").write_bytes(WEBP)
    (root / "shot_0001.png").write_bytes(PNG)
    (root / "manager.metadata.json").write_text(json.dumps({"preview_url": str(root / "shot_0001.png")}))
    (root / "remote.metadata.json").write_text(json.dumps({"preview_url": "https://example.com/p.png"}))
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    (root / "outside.metadata.json").write_text(json.dumps({"preview_url": "../secret.png"}))
    os.symlink(tmp_path / "secret.png", root / "linked.preview.png")
    return application(routes_module.LoraRoutes(Folders(root, tmp_path / "hash-cache.json")))


def get(app, paths):
    async def go():
        async with TestClient(TestServer(app)) as c:
            out = []
            for path in paths:
                response = await c.get(path)
                out.append((response.status, response.headers.get("Content-Type"), await response.read()))
            return out
    return asyncio.run(go())


def test_previews_come_from_sidecars_in_order(app):
    answers = get(app, [f"/loradeck/preview?name={n}.safetensors" for n in ("ink", "wash", "manager")])
    assert answers == [(200, "image/png", PNG), (200, "image/webp", WEBP), (200, "image/png", PNG)]


def test_no_preview_is_404_and_nothing_leaves_the_folder(app):
    paths = [f"/loradeck/preview?name={n}.safetensors" for n in ("none", "remote", "outside", "linked")]
    answers = get(app, [*paths, "/loradeck/preview?name=../secret.png"])
    assert [status for status, _, _ in answers[:4]] == [404, 404, 404, 404]
    assert answers[4][0] in (400, 403, 404)
    assert all(b"\x89PNG secret" not in body for _, _, body in answers)  # the bytes outside are never served


def test_info_says_whether_there_is_a_preview(app):
    (_, _, with_one), (_, _, without) = get(app, ["/loradeck/info?name=ink.safetensors",
                                                  "/loradeck/info?name=none.safetensors"])
    assert json.loads(with_one)["preview"] is True and json.loads(without)["preview"] is False
