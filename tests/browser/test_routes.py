"""The /loradeck/ routes on the live server: confined to the loras folders, hashing off the event loop."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import spec_table

ESCAPES = [
    ("../outside/secret.safetensors", 400),
    ("styles/../../outside/secret.safetensors", 400),
    ("..\\outside\\secret.safetensors", 400),
    ("/etc/passwd", 400),
    ("C:\\Windows\\win.ini", 400),
    ("\\\\server\\share\\x.safetensors", 400),
    ("notes.txt", 404),  # in the folder, but not a LoRA file
    ("missing.safetensors", 404),
    ("styles", 404),  # a folder
    ("%2e%2e/outside/secret.safetensors", 404),  # arrives still encoded after one decode: just a strange name
    ("a\x00.safetensors", 400),
    ("x" * 5000, 400),
]


def _query(name: str) -> str:
    return urllib.parse.quote(name, safe="")


@pytest.mark.parametrize("route", ["info", "hash", "energy"])
@pytest.mark.parametrize(("name", "status"), ESCAPES)
def test_escapes_are_refused(server, route, name, status):
    code, body = server.get(f"/loradeck/{route}?name={_query(name)}")
    assert code == status, body
    assert "error" in body
    assert "SECRET_TAG" not in json.dumps(body)


@pytest.mark.parametrize("raw", [
    "..%2Foutside%2Fsecret.safetensors",  # one level of encoding, decoded once by the server
    "%2E%2E%2Foutside%2Fsecret.safetensors",
    "%2F..%2F..%2Fetc%2Fpasswd",
    "styles%2F..%2F..%2Foutside%2Fsecret.safetensors",
])
def test_encoded_traversal_is_refused(server, raw):
    for route in ("info", "hash", "energy"):
        code, body = server.get(f"/loradeck/{route}?name={raw}")
        assert code == 400, body


def test_missing_name_is_a_400(server):
    assert server.get("/loradeck/info")[0] == 400
    assert server.get("/loradeck/hash?name=")[0] == 400


def test_list_holds_only_loras_inside_the_folders(server):
    code, body = server.get("/loradeck/list")
    assert code == 200
    names = [entry["name"] for entry in body["loras"]]
    assert names == sorted(server.files, key=str.lower)
    assert "notes.txt" not in names
    sizes = {entry["name"]: entry["size"] for entry in body["loras"]}
    assert sizes["alpha_style.safetensors"] == server.files["alpha_style.safetensors"].stat().st_size
    # The same list is served under the /api prefix the frontend uses.
    assert server.get("/api/loradeck/list")[1] == body


def test_symlink_placed_by_the_user_works(server):
    code, body = server.get("/loradeck/info?name=linked.safetensors")
    assert code == 200, body
    assert body["adapter_kinds"] == ["lora"]
    code, body = server.get("/loradeck/hash?name=linked.safetensors")
    target = Path(os.path.realpath(server.files["linked.safetensors"]))
    assert target.parent == server.outside  # the link leads out of the folder: the user put it there
    assert body["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_info_facts(server):
    code, info = server.get("/loradeck/info?name=styles/beta_ink.safetensors")
    assert code == 200, info
    assert (info["format"], info["adapter_kinds"]) == ("kohya", ["lora"])
    assert (info["base"], info["ranks"], info["alphas"], info["modules"]) == ("sd1", [8], [8.0], 5)
    assert info["tags"] == [{"tag": "ink", "count": 9}, {"tag": "lineart", "count": 4}]
    assert info["resolution"] == [512, 512]
    assert info["size"] == server.files["styles/beta_ink.safetensors"].stat().st_size


def test_block_energy(server):
    code, body = server.get("/loradeck/energy?name=alpha_style.safetensors")
    assert code == 200, body
    assert set(body["shares"]) == {"IN01", "IN04", "M00", "OUT03", "OUT07"}  # the fixture's five modules
    assert abs(sum(body["shares"].values()) - 1) < 1e-9
    assert (body["measured"], body["not_measured"], body["base"]) == (5, 0, "sd1")


def test_presets(server):
    code, body = server.get("/loradeck/presets")
    assert code == 200
    assert body["builtin"]["INALL"] == "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0"
    assert body["user"] == {"SOFTFACE": "IN04=0.5, OUT05=0.25", **spec_table.USER_PRESETS}


def test_hash_and_find(server):
    path = server.files["characters/delta_hero.safetensors"]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    code, body = server.get("/loradeck/hash?name=characters/delta_hero.safetensors")
    assert (code, body["sha256"], body["autov2"]) == (200, sha, sha[:10].upper())
    assert server.get("/loradeck/info?name=characters/delta_hero.safetensors")[1]["sha256"] == sha  # remembered
    assert server.get(f"/loradeck/find?sha256={sha}")[1]["matches"] == ["characters/delta_hero.safetensors"]
    assert server.get(f"/loradeck/find?sha256={sha[:10].upper()}")[1]["matches"] == [
        "characters/delta_hero.safetensors"]
    assert server.get("/loradeck/find?sha256=" + "0" * 64)[1]["matches"] == []
    assert server.get("/loradeck/find?sha256=../../etc")[0] == 400
    cache = server.base / "user" / "loradeck" / "hash-cache.json"
    assert sha in cache.read_text()  # persisted: a restart does not hash the file again


def test_hashing_a_big_file_leaves_the_server_responsive(server):
    big = server.loras / "big" / "huge.safetensors"
    big.parent.mkdir(exist_ok=True)
    big.write_bytes((server.files["alpha_style.safetensors"]).read_bytes())
    with open(big, "r+b") as f:  # a 768 MB sparse tail: slow to hash, instant to create
        f.truncate(768 * 1024 * 1024)
    server.get("/loradeck/list")  # the host re-scans the folder
    done: dict = {}

    def hash_it():
        done["result"] = server.get("/loradeck/hash?name=big/huge.safetensors")
        done["at"] = time.monotonic()

    started = time.monotonic()
    worker = threading.Thread(target=hash_it)
    worker.start()
    time.sleep(0.3)
    code, _ = server.get("/loradeck/list")
    answered = time.monotonic()
    worker.join(timeout=120)
    assert code == 200
    assert done["result"][0] == 200
    # The list came back while the hash was still being computed (not queued behind it).
    assert answered < done["at"], (answered - started, done["at"] - started)
    big.unlink()


def test_web_folder_served(server):
    code, scripts = server.get("/extensions")
    assert code == 200
    assert "/extensions/comfyui-loradeck/loradeck.js" in scripts
    with urllib.request.urlopen(server.url + "/extensions/comfyui-loradeck/docs/LoraDeckStack.md") as r:
        assert r.read().startswith(b"# LoRA Deck Stack")
