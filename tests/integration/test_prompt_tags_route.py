"""POST /loradeck/prompt_tags on a real aiohttp server: the prompt editor's reading of the tags in a text.

Tag meaning is A1111's (extensions-builtin/Lora/extra_networks_lora.py): positional 2 is the text-encoder
multiplier (clip), positional 3 the UNet one (model; default: the text-encoder one), `te=` / `unet=`
override them. Names resolve as the prompt node resolves them: path without extension, file stem, or the
alias A1111 reads from `ss_output_name`; two files for one name is an error naming both.
"""

from __future__ import annotations

import asyncio
import importlib

import hostile_corpus as corpus
import pytest
from aiohttp.test_utils import TestClient, TestServer
from route_harness import Folders, application
from safetensors.torch import save_file


@pytest.fixture
def app(pack, tmp_path):
    routes_module = importlib.import_module(f"{pack.__name__}.nodes.routes")
    root = tmp_path / "loras"
    for relative in ("styles/ink.safetensors", "sketch/ink.safetensors", "styles/deep/gamma.safetensors"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(corpus.good_bytes())
    save_file(corpus.good_tensors(seed=3), str(root / "wash.safetensors"),
              metadata={"ss_output_name": "watercolor_v2"})  # kohya's sd-scripts writes the alias here
    return application(routes_module.LoraRoutes(Folders(root, tmp_path / "hash-cache.json")))


def post(app, bodies):
    async def go():
        async with TestClient(TestServer(app)) as c:
            out = []
            for body in bodies:
                response = await c.post("/loradeck/prompt_tags", json=body)
                out.append((response.status, await response.json()))
            return out
    return asyncio.run(go())


def test_each_tag_with_its_file_and_strengths(app):
    text = "a cat <lora:styles/ink:0.8:0.3>, <lora:gamma:0.5> <lora:watercolor_v2:1:unet=0.25> <12:30>"
    ((status, answer),) = post(app, [{"text": text}])
    assert status == 200 and answer["error"] is None
    got = [(t["tag"], t["position"], t["file"], t["model"], t["clip"]) for t in answer["tags"]]
    assert got == [
        ("<lora:styles/ink:0.8:0.3>", text.index("<lora:styles") + 1, "styles/ink.safetensors", 0.3, 0.8),
        ("<lora:gamma:0.5>", text.index("<lora:gamma") + 1, "styles/deep/gamma.safetensors", 0.5, 0.5),
        ("<lora:watercolor_v2:1:unet=0.25>", text.index("<lora:water") + 1, "wash.safetensors", 0.25, 1.0),
    ]


def test_ambiguous_and_missing_names_are_errors_naming_the_files(app):
    ((_, answer),) = post(app, [{"text": "<lora:ink:1> <lora:nothing_here:1>"}])
    ambiguous, missing = answer["tags"]
    assert ambiguous["file"] is None
    assert "styles/ink.safetensors" in ambiguous["error"] and "sketch/ink.safetensors" in ambiguous["error"]
    assert missing["file"] is None and "nothing_here" in missing["error"]


def test_malformed_tag_and_bad_requests(app):
    answers = post(app, [{"text": "ok <lora:wash:abc>"}, {"text": "no tags"}, {"text": 5}, ["text"],
                         {"text": "x" * 100_001}])
    (status, malformed), (_, plain), *refused = answers
    assert status == 200 and malformed["tags"] == [] and malformed["position"] == 15  # the bad value
    assert "<lora:wash:abc>" in malformed["error"]
    assert plain == {"tags": [], "error": None}
    assert [s for s, _ in refused] == [400, 400, 400] and all("text" in body["error"] for _, body in refused)


def test_list_says_which_loras_have_a_preview(pack, tmp_path):
    routes_module = importlib.import_module(f"{pack.__name__}.nodes.routes")
    root = tmp_path / "loras"
    root.mkdir()
    for stem in ("ink", "wash"):
        (root / f"{stem}.safetensors").write_bytes(corpus.good_bytes())
    (root / "ink.preview.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"png-bytes")
    listing = routes_module.LoraRoutes(Folders(root, tmp_path / "h.json"))._listing()
    assert {e["name"]: e["preview"] for e in listing} == {"ink.safetensors": True, "wash.safetensors": False}
