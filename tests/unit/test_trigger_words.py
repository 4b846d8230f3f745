"""Trigger words from real-format sidecars and metadata, and the user's pinned words.

Sidecar shapes are the producers' own: Civitai Helper (butaixianran/Stable-Diffusion-Webui-Civitai-Helper) saves
Civitai's model-version JSON as `<stem>.civitai.info` and reads its `trainedWords`; LoRA Manager
(willmiao/ComfyUI-Lora-Manager, py/utils/models.py BaseModelMetadata/LoraMetadata) writes `<stem>.metadata.json`
with top-level fields and the Civitai version JSON under `civitai`. kohya sd-scripts writes `ss_tag_frequency`
as json.dumps({folder: {tag: count}}) and `ss_dataset_dirs` as {folder: {n_repeats, img_count}}.
"""

from __future__ import annotations

import json
import os

import pytest

from loader import trigger_words

CIVITAI_INFO = {
    "id": 123456, "modelId": 98765, "name": "v2.0", "createdAt": "2024-03-01T10:00:00.000Z",
    "trainedWords": ["inkstyle", "ink wash painting, monochrome"], "baseModel": "SD 1.5",
    "description": "<p>second version</p>", "model": {"name": "Ink Style", "type": "LORA", "nsfw": False},
    "files": [{"name": "ink.safetensors", "sizeKB": 9216.5, "type": "Model",
               "hashes": {"AutoV2": "ABCDEF0123", "SHA256": "ABCDEF0123" + "0" * 54}}],
    "images": [{"url": "https://image.civitai.com/x/preview.jpeg", "nsfw": "None", "width": 512, "height": 768}],
    "downloadUrl": "https://civitai.com/api/download/models/123456",
}
LORA_MANAGER = {
    "file_name": "ink", "model_name": "Ink Style", "file_path": "/models/loras/ink.safetensors", "size": 9437696,
    "modified": 1709287200.0, "sha256": "abcdef0123" + "0" * 54, "base_model": "SD 1.5",
    "preview_url": "/models/loras/ink.preview.jpeg", "preview_nsfw_level": 0, "notes": "", "from_civitai": True,
    "civitai": {"id": 123456, "trainedWords": ["inkstyle", "sumi-e"], "baseModel": "SD 1.5"},
    "tags": ["style"], "modelDescription": "", "civitai_deleted": False, "favorite": False, "exclude": False,
    "db_checked": False, "usage_tips": "{\"strength\": 0.8}", "trainedWords": ["InkStyle", "brush strokes"],
}
KOHYA = {
    "ss_tag_frequency": json.dumps({"10_inkchar": {"inkchar": 24, "1girl": 24, "monochrome": 20, "smile": 3},
                                    "5_bg": {"ink background": 8, "scenery": 8, "tree": 2}}),
    "ss_dataset_dirs": json.dumps({"10_inkchar": {"n_repeats": 10, "img_count": 24},
                                   "5_bg": {"n_repeats": 5, "img_count": 8}}),
}


@pytest.fixture
def lora(tmp_path):
    path = tmp_path / "ink.safetensors"
    path.write_bytes(b"\0" * 16)
    return str(path)


def write(lora, suffix, data):
    with open(os.path.splitext(lora)[0] + suffix, "w", encoding="utf-8") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))


def test_civitai_helper_info(lora):
    write(lora, ".civitai.info", CIVITAI_INFO)
    found = trigger_words.for_lora(lora, "ink.safetensors", KOHYA)
    assert found.words == ["inkstyle", "ink wash painting, monochrome"]
    assert found.sources == {"civitai.info": found.words}  # explicit words: the caption statistics stay out


def test_lora_manager_metadata_json(lora):
    write(lora, ".metadata.json", LORA_MANAGER)
    found = trigger_words.for_lora(lora, "ink.safetensors", {})
    assert found.words == ["InkStyle", "brush strokes", "sumi-e"]  # top-level first, then civitai's, each once


def test_every_source_in_order_each_word_once(lora):
    write(lora, ".civitai.info", CIVITAI_INFO)
    write(lora, ".metadata.json", LORA_MANAGER)
    meta = {**KOHYA, "modelspec.trigger_phrase": "inkstyle, flowing ink"}
    found = trigger_words.for_lora(lora, "ink.safetensors", meta, {"ink.safetensors": ["my ink", "InkStyle"]})
    assert found.words == ["my ink", "InkStyle", "ink wash painting, monochrome", "brush strokes", "sumi-e",
                           "flowing ink"]
    assert list(found.sources) == ["pinned", "civitai.info", "metadata.json", "modelspec.trigger_phrase"]


def test_caption_words_are_the_tags_in_every_caption_of_a_folder(lora):
    assert trigger_words.caption_words(KOHYA) == ["inkchar", "1girl", "ink background", "scenery"]
    without_dirs = {"ss_tag_frequency": KOHYA["ss_tag_frequency"]}
    assert trigger_words.caption_words(without_dirs) == ["inkchar", "1girl", "ink background", "scenery"]
    assert trigger_words.for_lora(lora, "ink.safetensors", KOHYA).sources == {
        "ss_tag_frequency": ["inkchar", "1girl", "ink background", "scenery"]}


@pytest.mark.parametrize("raw", ["{not json", "[]", "null", json.dumps({"d": {"a": "x", "b": True}}), ""])
def test_broken_tag_frequency_gives_no_words(raw):
    assert trigger_words.caption_words({"ss_tag_frequency": raw}) == []


@pytest.mark.parametrize("content", ["{broken", "[1, 2]", "\"text\""])
def test_a_broken_sidecar_is_skipped_and_named(lora, content):
    write(lora, ".civitai.info", content)
    found = trigger_words.for_lora(lora, "ink.safetensors", {"modelspec.trigger_phrase": "inkstyle"})
    assert found.words == ["inkstyle"]
    assert found.notes and "ink.civitai.info ignored" in found.notes[0]


def test_an_oversized_sidecar_is_not_read(lora, monkeypatch):
    monkeypatch.setattr(trigger_words, "MAX_SIDECAR_BYTES", 100)
    write(lora, ".metadata.json", LORA_MANAGER)
    found = trigger_words.for_lora(lora, "ink.safetensors", {})
    assert found.words == [] and "limit" in found.notes[0]


def test_pinned_words_are_stored_atomically_and_read_back(tmp_path):
    store = str(tmp_path / "user" / "loradeck" / "trigger_words.json")
    assert trigger_words.load_pinned(store) == {}
    trigger_words.pin(store, "styles/ink.safetensors", [" my ink ", "", "sumi-e"])
    trigger_words.pin(store, "grain.safetensors", ["grainy"])
    assert trigger_words.load_pinned(store) == {"styles/ink.safetensors": ["my ink", "sumi-e"],
                                                "grain.safetensors": ["grainy"]}
    trigger_words.pin(store, "grain.safetensors", [])
    assert trigger_words.load_pinned(store) == {"styles/ink.safetensors": ["my ink", "sumi-e"]}
    assert [p.name for p in (tmp_path / "user" / "loradeck").iterdir()] == ["trigger_words.json"]  # no temp left


def test_a_store_that_is_not_ours_is_never_overwritten(tmp_path):
    store = tmp_path / "trigger_words.json"
    store.write_text("[\"someone else's list\"]")
    with pytest.raises(ValueError, match="not overwritten"):
        trigger_words.pin(str(store), "a.safetensors", ["x"])
    assert store.read_text() == "[\"someone else's list\"]"
    with pytest.raises(ValueError, match="list of strings"):
        trigger_words.pin(str(tmp_path / "new.json"), "a.safetensors", "x")


def test_joined_lists_each_word_once():
    assert trigger_words.joined([["a", "B"], ["b", "c"], []]) == "a, B, c"
