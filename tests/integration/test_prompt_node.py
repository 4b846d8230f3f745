"""LoraDeckPrompt on the real host: prompt tags → LORA_STACK → LoRA Deck Apply, names, text and metadata.

Fixtures are kohya SD1 files made by peft + diffusers' converter on the miniature SD1 shapes. The reference for
the patched weights is LoRA Deck Stack rows with the same strengths and block specs (the meaning A1111 gives a
tag: model strength = its UNet multiplier, clip strength = its text-encoder multiplier), at 1e-6 relative per
weight. The cleaned text is compared with the host's own CLIPTextEncode on the miniature SD1 text encoder.
Hashes are checked against hashlib's SHA-256 of each file (AutoV2 = its first 10 hex digits).
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import import_module

import folder_paths
import hosting
import producers
import pytest
import torch
from compare import changed, worst_relative_error
from safetensors.torch import load_file, save_file

import nodes

TOLERANCE = 1e-6
SEEN: dict[str, object] = {}


class PromptProbe:
    """Test output node: keeps what LoraDeckPrompt gave, so the host's executor runs (and validates) it."""

    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True}), "lora_stack": ("LORA_STACK",),
                             "metadata": ("STRING", {"forceInput": True}),
                             "saver": ("STRING", {"forceInput": True}), "report": ("STRING", {"forceInput": True})}}

    def probe(self, text, lora_stack, metadata, saver, report):
        SEEN.update(text=text, lora_stack=lora_stack)
        return {"ui": {"text": [text], "metadata": [metadata], "saver": [saver], "report": [report]}}


def node(name):
    return nodes.NODE_CLASS_MAPPINGS[name]


def _with_metadata(path, metadata: dict[str, str]) -> str:
    save_file(load_file(path), path, metadata=metadata)
    return path


@pytest.fixture(scope="module")
def files(loras_dir, pack, tmp_path_factory):
    user = tmp_path_factory.mktemp("user")
    old_user = folder_paths.get_user_directory()
    folder_paths.set_user_directory(str(user))  # the hash cache is written there, never into the host's tree
    folders = import_module(pack.__name__ + ".nodes.folders")
    folders.hash_cache.cache_clear()
    root = loras_dir / "prompt"
    (root / "styles").mkdir(parents=True, exist_ok=True)
    for sub in ("a", "b", "c"):
        (root / sub).mkdir(exist_ok=True)
    unet = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=4, alpha=8, seed=40)
    text = producers.attach_lora(producers.transformers_clip_text(), producers.TEXT_TARGETS, rank=4, alpha=8, seed=41)
    made = {"ink": producers.save_kohya_sd15(str(root / "ink.safetensors"), unet, text)}
    unet = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=4, alpha=4, seed=42)
    text = producers.attach_lora(producers.transformers_clip_text(), ["q_proj", "fc2"], rank=2, alpha=2, seed=43)
    made["grain"] = _with_metadata(producers.save_kohya_sd15(str(root / "styles" / "grain v2.safetensors"), unet,
                                                             text), {"ss_output_name": "filmgrain",
                                                                     "modelspec.trigger_phrase": "grainy film, 35mm"})
    unet = producers.attach_lora(producers.diffusers_sd15_unet(), ["to_q", "to_v"], rank=2, alpha=2, seed=44)
    made["other"] = _with_metadata(producers.save_kohya_sd15(str(root / "c" / "other.safetensors"), unet, None),
                                   {"ss_output_name": "twin"})
    for sub in ("a", "b"):
        made[f"twin_{sub}"] = str(root / sub / "twin.safetensors")
        (root / sub / "twin.safetensors").write_bytes((root / "c" / "other.safetensors").read_bytes())
    # Civitai Helper's sidecar (Civitai's model-version JSON), and a word the user pinned.
    (root / "ink.civitai.info").write_text(json.dumps({
        "id": 11, "modelId": 7, "name": "v1", "trainedWords": ["inkstyle", "ink wash"], "baseModel": "SD 1.5",
        "model": {"name": "Ink", "type": "LORA"}, "files": [], "images": []}))
    trigger_words = import_module(pack.__name__ + ".loader.trigger_words")
    trigger_words.pin(str(user / "loradeck" / "trigger_words.json"), "prompt/c/other.safetensors", ["othery"])
    folder_paths.filename_list_cache.pop("loras", None)
    yield made
    folder_paths.set_user_directory(old_user)
    folders.hash_cache.cache_clear()


def prompt_node(text, lora_stack=None):
    return node("LoraDeckPrompt").execute(text=text, lora_stack=lora_stack).args


def applied(sd15, sd15_clip, lora_stack):
    model, clip, _ = node("LoraDeckApply").execute(model=sd15, lora_stack=lora_stack, clip=sd15_clip).args
    return changed(model), changed(clip.patcher)


TEXT = ("a photo <lora:ink:0.8:0.6:lbw=OUTALL>, film <lora:filmgrain:unet=0.5:te=1.5:lbw=IN04-IN05=0,OUT*=0.5; "
        "BASE=0.25> of a cat")
INCOMING = [("prompt/c/other.safetensors", 0.3, 0.2)]  # as Efficiency Nodes or Comfyroll hand it on
EQUIVALENT_ROWS = [
    {"lora": "prompt/ink.safetensors", "strength": 0.6, "clip_strength": 0.8, "blocks": "OUTALL"},
    {"lora": "prompt/styles/grain v2.safetensors", "strength": 0.5, "clip_strength": 1.5,
     "blocks": "IN04-IN05=0,OUT*=0.5; BASE=0.25"},
]


def test_prompt_then_apply_equals_the_equivalent_stack_rows(files, sd15, sd15_clip):
    _, lora_stack, triggers, _, _, report = prompt_node(TEXT, INCOMING)
    assert [tuple(e) for e in lora_stack] == [("prompt/c/other.safetensors", 0.3, 0.2),
                                              ("prompt/ink.safetensors", 0.6, 0.8),
                                              ("prompt/styles/grain v2.safetensors", 0.5, 1.5)]
    assert [e.blocks for e in lora_stack] == ["", "OUTALL", "IN04-IN05=0,OUT*=0.5; BASE=0.25"]
    (rows_stack,) = node("LoraDeckStack").execute(lora_stack=INCOMING, rows=EQUIVALENT_ROWS).args[:1]
    ours_model, ours_clip = applied(sd15, sd15_clip, lora_stack)
    rows_model, rows_clip = applied(sd15, sd15_clip, rows_stack)
    assert len(ours_model) > 100 and len(ours_clip) > 10
    assert worst_relative_error(ours_model, rows_model) <= TOLERANCE
    assert worst_relative_error(ours_clip, rows_clip) <= TOLERANCE
    # The block weights did travel: without them the result is another one.
    plain = [{**row, "blocks": ""} for row in EQUIVALENT_ROWS]
    (plain_stack,) = node("LoraDeckStack").execute(lora_stack=INCOMING, rows=plain).args[:1]
    plain_model, _ = applied(sd15, sd15_clip, plain_stack)
    assert set(plain_model) > set(ours_model)  # IN04, IN05 at 0 in the second tag's spec (and OUTALL in the first)
    assert worst_relative_error(ours_model, {k: plain_model[k] for k in ours_model}) > 0.1
    assert triggers == "othery, inkstyle, ink wash, grainy film, 35mm"  # in the stack's order
    assert "prompt/ink.safetensors: model 0.6, clip 0.8 (tag at character 9), blocks OUTALL" in report


def test_cleaned_text_encodes_as_the_prompt_without_tags(files, sd15_clip):
    cleaned = prompt_node(TEXT)[0]
    without_tags = "a photo , film  of a cat"
    assert cleaned == without_tags
    encode = node("CLIPTextEncode")()

    def encoded(text):
        (conditioning,) = encode.encode(sd15_clip, text)
        return conditioning[0][0], conditioning[0][1]["pooled_output"]

    ours, reference, tagged = encoded(cleaned), encoded(without_tags), encoded(TEXT)
    assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])
    assert not torch.equal(ours[0], tagged[0])  # the tags would have reached the text encoder
    untouched = "time <12:30>, <b>bold</b>"
    assert prompt_node(untouched)[0] == untouched and prompt_node(untouched)[1] == []


def a1111_lora_hashes(field_value: str) -> dict[str, str]:
    """As A1111's extensions-builtin/Lora/scripts/lora_script.py infotext_pasted reads `Lora hashes`."""
    items = [x.strip().split(":", 1) for x in field_value.split(",")]
    return {x[0].strip().replace(",", ""): x[1].strip() for x in items}


def test_image_metadata_names_the_files_that_ran_with_their_autov2(files):
    _, _, _, metadata, saver, _ = prompt_node(TEXT, INCOMING)
    tags_line, hashes_line = metadata.split("\n")
    assert tags_line == "<lora:other:0.2:0.3> <lora:ink:0.8:0.6> <lora:grain v2:1.5:0.5>"
    key, value = hashes_line.split(": ", 1)
    hashes = a1111_lora_hashes(json.loads(value))
    assert key == "Lora hashes"

    def autov2(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:10].upper()

    expected = {"other": autov2(files["other"]), "ink": autov2(files["ink"]), "grain v2": autov2(files["grain"])}
    assert hashes == expected
    assert saver == ",".join(f"{name}:{h}:{w}" for (name, h), w in zip(expected.items(), ("0.3", "0.6", "0.5"),
                                                                        strict=True))


def probe_prompt(text: str) -> dict:
    return {
        "1": {"class_type": "LoraDeckPrompt", "inputs": {"text": text}},
        "2": {"class_type": "PromptProbe", "inputs": {"text": ["1", 0], "lora_stack": ["1", 1], "metadata": ["1", 3],
                                                      "saver": ["1", 4], "report": ["1", 5]}},
    }


@pytest.fixture(scope="module")
def host(files):
    nodes.NODE_CLASS_MAPPINGS["PromptProbe"] = PromptProbe
    yield hosting.Executor()
    nodes.NODE_CLASS_MAPPINGS.pop("PromptProbe", None)


def test_the_host_runs_the_node_and_keeps_its_outputs(host):
    outputs = host.run(probe_prompt("<lyco:prompt/ink:0.5:start=3:stop=12> cat"))
    assert outputs["2"]["text"] == [" cat"]
    assert [tuple(e) for e in SEEN["lora_stack"]] == [("prompt/ink.safetensors", 0.5, 0.5)]
    assert "A1111 steps: applied by LoRA Deck Apply Scheduled Stack" in outputs["2"]["report"][0]
    assert "steps 3…12" in outputs["2"]["report"][0]


@pytest.mark.parametrize(("text", "words"), [
    ("<lora:twin:1>", ["matches 3 files", "'prompt/a/twin.safetensors' (by file name and alias (ss_output_name))",
                       "'prompt/b/twin.safetensors' (by file name and alias (ss_output_name))",
                       "'prompt/c/other.safetensors' (by alias (ss_output_name))", "<lora:prompt/a/twin"]),
    ("x <lora:inkk:1>", ["tag '<lora:inkk:1>' at character 3", "LoRA not found",
                         "did you mean 'prompt/ink.safetensors'"]),
    ("<lora:ink:abc>", ["tag '<lora:ink:abc>' at character 1", "'abc' at character 11 is not a number"]),
    ("<lora:ink:te = 0.5>", ["without spaces"]),
])
def test_bad_tags_and_names_stop_the_workflow_before_it_runs(host, text, words):
    status, errors = host.outcome(probe_prompt(text))
    assert status == "invalid", (status, errors)
    details = " | ".join(e.get("details", "") for e in errors["1"])
    for word in words:
        assert word in details, details
    assert "Traceback" not in details


def test_each_candidate_can_be_chosen_by_its_path(host):
    for path in ("prompt/a/twin", "prompt/b/twin.safetensors", "prompt/c/other"):
        host.run(probe_prompt(f"<lora:{path}:0.5>"))
        assert re.fullmatch(r"prompt/[abc]/\w+\.safetensors", SEEN["lora_stack"][0][0])
        assert SEEN["lora_stack"][0][0].startswith(path)


def test_trigger_words_come_from_exactly_the_loras_that_run(files, sd15, sd15_clip):
    assert prompt_node("<lora:ink:0.5> <lora:filmgrain:0>")[2] == "inkstyle, ink wash"  # strength 0 runs nothing
    rows = [{"lora": "prompt/ink.safetensors", "strength": 0.5, "on": False},
            {"lora": "prompt/styles/grain v2.safetensors", "strength": 0.5},
            {"lora": "prompt/c/other.safetensors", "strength": 0.0, "clip_strength": 0.0}]
    lora_stack, words = node("LoraDeckStack").execute(rows=rows).args
    assert [e[0] for e in lora_stack] == ["prompt/styles/grain v2.safetensors", "prompt/c/other.safetensors"]
    assert words == "grainy film, 35mm"  # the disabled row and the row at strength 0 give none
    *_, words = node("LoraDeckLoader").execute(model=sd15, lora_name="prompt/ink.safetensors", strength_model=0.5,
                                               clip=sd15_clip).args
    assert words == "inkstyle, ink wash"
    *_, words = node("LoraDeckLoader").execute(model=sd15, lora_name="prompt/ink.safetensors", strength_model=0.0,
                                               clip=sd15_clip, strength_clip=0.0).args
    assert words == ""
    (_, words) = node("LoraDeckStack").execute(lora_stack=[("elsewhere/unknown.safetensors", 1.0, 1.0)]).args
    assert words == ""  # another pack's name that is no file here: passed on, no words


def test_an_incoming_name_that_is_no_file_here_is_passed_on_and_named(files):
    _, lora_stack, words, metadata, saver, report = prompt_node("<lora:ink:0.5>", [("elsewhere/x.safetensors", 1, 1)])
    assert [e[0] for e in lora_stack] == ["elsewhere/x.safetensors", "prompt/ink.safetensors"]
    assert metadata.startswith("<lora:ink:0.5>\n") and saver.startswith("ink:") and "," not in saver
    assert "not in your loras folders, so left out of the metadata: elsewhere/x.safetensors" in report
    assert words == "inkstyle, ink wash"


@pytest.mark.parametrize("lbw", ["1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1", "OUTD", "M00=0, OUT*=0.5"])
def test_lbw_vectors_presets_and_specs_equal_the_same_spec_in_a_stack_row(files, sd15, sd15_clip, lbw):
    lora_stack = prompt_node(f"<lora:ink:0.9:0.7:lbw={lbw}>")[1]
    (rows_stack, _) = node("LoraDeckStack").execute(rows=[{"lora": "prompt/ink.safetensors", "strength": 0.7,
                                                           "clip_strength": 0.9, "blocks": lbw}]).args
    ours_model, ours_clip = applied(sd15, sd15_clip, lora_stack)
    rows_model, rows_clip = applied(sd15, sd15_clip, rows_stack)
    assert worst_relative_error(ours_model, rows_model) <= TOLERANCE
    assert worst_relative_error(ours_clip, rows_clip) <= TOLERANCE
    plain_model, _ = applied(sd15, sd15_clip, prompt_node("<lora:ink:0.9:0.7>")[1])
    assert set(ours_model) != set(plain_model) or worst_relative_error(ours_model, plain_model) > 0.1
