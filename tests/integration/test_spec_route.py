"""POST /loradeck/spec: the block editor's only reader of specs, confined like every route, and its stand-in
block maps equal to the block maps the patching code builds on the real host's live models."""

from __future__ import annotations

import asyncio
import importlib
import json

import aiohttp
import hosting
import pytest
import torch
from aiohttp import web
from aiohttp.test_utils import TestServer
from safetensors.torch import save_file
from spec_table import SPECS, USER_PRESETS
from test_hostile_routes import Folders

SECRET = "SECRET_MODULE_NAME"


@pytest.fixture(scope="module")
def modules(pack):
    return (importlib.import_module(f"{pack.__name__}.nodes.routes"),
            importlib.import_module(f"{pack.__name__}.loader.spec_view"))


def _kohya(path, names):
    tensors = {}
    for name in names:
        tensors[f"{name}.lora_down.weight"] = torch.ones(2, 8)
        tensors[f"{name}.lora_up.weight"] = torch.ones(8, 2)
        tensors[f"{name}.alpha"] = torch.tensor(2.0)
    save_file(tensors, str(path))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("spec-route")
    root = base / "loras"
    root.mkdir()
    _kohya(root / "sd3.safetensors", [f"lora_unet_joint_blocks_{i}_x_block_attn_qkv" for i in (0, 5, 11)])
    _kohya(root / "sd1.safetensors", ["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"])
    (root / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    _kohya(base / "secret.safetensors", [f"lora_unet_{SECRET}_{i}_x" for i in range(3)])
    return base, root


def _post_all(modules, folder, bodies):
    routes_module, _ = modules
    base, root = folder
    table = web.RouteTableDef()
    routes_module.LoraRoutes(Folders(root, base / "hash-cache.json")).add_to(table)
    app = web.Application()
    app.add_routes(table)

    async def run():
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                answers = []
                for body in bodies:
                    data = body if isinstance(body, bytes) else json.dumps(body).encode()
                    async with session.post(server.make_url("/loradeck/spec"), data=data) as response:
                        answers.append((response.status, await response.json()))
                return answers
        finally:
            await server.close()

    return asyncio.run(run())


def test_reading_a_spec(modules, folder):
    (status, body), = _post_all(modules, folder, [{"spec": "M00=1, default=0"}])
    assert status == 200 and body["layout"] == "sd1" and body["error"] is None
    assert body["ratios"]["M00"] == 1 and body["ratios"]["IN04"] == 0 and body["default"] == 0
    assert body["reading"].startswith("default=0\n") and body["sliders"] is True
    assert body["kind"] == "unet" and len(body["down"]) == 12 and body["text"] == ["BASE"]


def test_a_spec_that_does_not_read_is_an_answer_with_its_position(modules, folder):
    (status, body), = _post_all(modules, folder, [{"spec": "IN04=1, XX=2", "layout": "sdxl"}])
    assert status == 200 and body["position"] == 9 and "unknown block id 'XX'" in body["error"]
    assert body["layout"] == "sdxl" and "ratios" not in body  # the layout is still there to draw


def test_the_loras_base_and_own_blocks_choose_the_layout(modules, folder):
    answers = _post_all(modules, folder, [{"spec": "J05=0", "lora": "sd3.safetensors"},
                                          {"spec": "", "lora": "sd1.safetensors"},
                                          {"spec": "", "lora": "sd3.safetensors", "layout": "flux"},
                                          {"spec": "", "lora": "broken.safetensors"}])
    (s1, own), (s2, sd1), (s3, flux), (s4, broken) = answers
    assert (s1, own["layout"], own["ratios"]["J05"]) == (200, "lora", 0)
    assert own["chains"] == [["Joint blocks", [f"J{i:02d}" for i in range(12)]]]
    assert (s2, sd1["layout"]) == (200, "sd1")
    assert (s3, flux["layout"], len(flux["chains"][1][1])) == (200, "flux", 38)
    assert (s4, broken["layout"]) == (200, "sd1")  # a named layout needs nothing from the file


@pytest.mark.parametrize(("body", "status", "says"), [
    (b"{not json", 400, "JSON object"),
    ([], 400, "JSON object"),
    ({"spec": 5}, 400, '"spec" is the block-weight text'),
    ({"spec": "x" * 50_000}, 400, "limit"),
    ({"spec": "", "layout": "sd9"}, 400, '"layout" is one of sd1, sdxl, flux, lora'),
    ({"spec": "", "layout": "lora"}, 400, 'give its name as "lora"'),
    ({"spec": "", "lora": 3}, 400, '"lora" is a LoRA name'),
    ({"spec": "", "lora": "../secret.safetensors"}, 400, ""),
    ({"spec": "", "lora": "/etc/passwd", "layout": "lora"}, 400, ""),
    ({"spec": "", "lora": "%2e%2e/secret.safetensors", "layout": "lora"}, 404, ""),
    ({"spec": "", "lora": "missing.safetensors"}, 404, "not a LoRA in your loras folders"),
    ({"spec": "", "lora": "broken.safetensors", "layout": "lora"}, 422, "cannot be read"),
])
def test_bad_requests_get_a_clear_refusal(modules, folder, body, status, says):
    (got, answer), = _post_all(modules, folder, [body])
    assert got == status and says in answer["error"], answer
    assert SECRET not in json.dumps(answer)


LIVE = {"sd1": ("SD15", hosting.mini_clip_sd1, None), "sdxl": ("SDXL", hosting.mini_clip_sdxl, None),
        "flux": ("Flux", hosting.mini_clip_flux, {**hosting.FLUX_DIT, "depth": 19, "depth_single_blocks": 38})}


@pytest.mark.parametrize("layout", sorted(LIVE))
def test_editor_layouts_are_the_block_maps_of_the_live_models(pack, modules, layout):
    _, spec_view = modules
    patching = importlib.import_module(f"{pack.__name__}.nodes.patching")
    spec = importlib.import_module(f"{pack.__name__}.loader.spec")
    family, clip, config = LIVE[layout]
    live = patching.block_map_of(hosting.mini_model(family, unet_config=config), clip())
    stand_in = spec_view.layout_map(layout)
    assert (stand_in.ids, stand_in.family, stand_in.text_encoders) == (live.ids, live.family, live.text_encoders)
    assert stand_in.aliases == live.aliases
    for family_of, text in SPECS.values():  # and every spec of the table reads the same on both
        if family_of == layout:
            on_model = spec.parse(text, live, presets=USER_PRESETS)
            answer = spec_view.reading(text, stand_in, USER_PRESETS)
            assert answer["ratios"] == {s: on_model.by_block.get(s, on_model.default) for s in live.ids}, text
