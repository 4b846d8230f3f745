"""The image-metadata strings read back by parsers written from the readers' own code.

- A1111 (AUTOMATIC1111/stable-diffusion-webui): `modules/infotext_utils.py` parse_generation_parameters (the
  last line holds the settings when it has 3 or more `key: value` pairs, matched by its re_param; quoted values
  are JSON), `modules/extra_networks.py` parse_prompt (tags `<(\\w+):([^>]+)>`, arguments split at `:`), and
  `extensions-builtin/Lora/scripts/lora_script.py` infotext_pasted (the `Lora hashes` value split at `,`, each
  item at its first `:`, names stripped with `,` removed, matched against `<lora:NAME:` in the prompt).
- Image Saver (alexopus/ComfyUI-Image-Saver, nodes.py): parse_manual_hashes with download_civitai_data on
  (items split at `,` and new lines, `name:HASH:weight` by its re_manual_hash_weights) and off (`name:HASH`).
Hashes are checked against hashlib's SHA-256 of each whole file (AutoV2 = its first 10 hex digits).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re

import pytest

from loader import image_metadata, prompt_tags
from loader.image_metadata import RanLora

# --- A1111, written from its code --------------------------------------------------------------------------
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_parse_generation_parameters(text: str) -> dict:
    *lines, last = text.strip().split("\n")
    if len(A1111_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, done = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done, line = True, line[16:].strip()
        if done:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    result = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in A1111_PARAM.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = json.loads(value)
        result[key] = value
    return result


def a1111_lora_hashes(field: str) -> dict[str, str]:
    items = [x.strip().split(":", 1) for x in field.split(",")]
    return {x[0].strip().replace(",", ""): x[1].strip() for x in items}


def a1111_lora_tags(prompt: str) -> list[tuple[str, float, float]]:
    """(name, te, unet) for each <lora:…> tag, as extra_networks_lora.py reads the arguments."""
    found = []
    for kind, args in re.findall(r"<(\w+):([^>]+)>", prompt):
        if kind != "lora":
            continue
        items = args.split(":")
        positional = [i for i in items if len(i.split("=", 2)) != 2]
        named = dict(i.split("=", 2) for i in items if len(i.split("=", 2)) == 2)
        te = float(positional[1]) if len(positional) > 1 else 1.0
        te = float(named.get("te", te))
        unet = float(positional[2]) if len(positional) > 2 else te
        found.append((positional[0], te, float(named.get("unet", unet))))
    return found


def a1111_names_in_prompt(prompt: str) -> list[str]:
    return re.findall(r"<lora:([^:]+):", prompt)


# --- Image Saver, written from its code ----------------------------------------------------------------------
SAVER_WITH_WEIGHTS = re.compile(r"^\s*([^:]+?)(?:\s*:\s*([^\s:][^:]*?))?(?:\s*:\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)))?\s*$")
SAVER_WITHOUT = re.compile(r"^\s*([^:]+?)(?:\s*:\s*([^\s:][^:]*?))?\s*$")


def image_saver_parse(additional_hashes: str, with_weights: bool) -> dict[str, tuple[float | None, str]]:
    entries = {}
    for entry in additional_hashes.replace("\n", ",").split(","):
        match = (SAVER_WITH_WEIGHTS if with_weights else SAVER_WITHOUT).search(entry)
        assert match is not None, f"Image Saver would reject {entry!r}"
        groups = tuple(g for g in match.groups() if g)
        weight = None
        if with_weights and len(groups) > 1:
            with contextlib.suppress(ValueError):
                weight, groups = float(groups[-1]), groups[:-1]
        name, hash_value = groups if len(groups) > 1 else (None, groups[0])
        entries[name] = (weight, hash_value)
    return entries


# --- the files and the run -----------------------------------------------------------------------------------
@pytest.fixture
def ran(tmp_path):
    contents = {"ink.safetensors": b"ink" * 1000, "styles/grain v2.safetensors": b"grain",
                "a/dup.safetensors": b"one", "b/dup.safetensors": b"two", "odd:na,me.pt": b"odd",
                "off.safetensors": b"off"}
    strengths = {"ink.safetensors": (0.7, 0.7), "styles/grain v2.safetensors": (0.4, 1.25),
                 "a/dup.safetensors": (1.0, 1.0), "b/dup.safetensors": (-0.5, -0.5), "odd:na,me.pt": (0.3, 0.3),
                 "off.safetensors": (0.0, 0.0)}
    loras = []
    for name, data in contents.items():
        path = tmp_path / name.replace(":", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        loras.append(RanLora(name, hashlib.sha256(path.read_bytes()).hexdigest(), *strengths[name]))
    return loras


def autov2_by_hashlib(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:10]


def test_a1111_form_round_trips_through_a1111s_parsers(ran):
    metadata = image_metadata.a1111_text(ran)
    tags_line, hashes_field = metadata.split("\n")
    infotext = (f"a photo, {tags_line}\nNegative prompt: blurry\n"
                f"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, {hashes_field}")
    parsed = a1111_parse_generation_parameters(infotext)
    assert parsed["Negative prompt"] == "blurry" and parsed["Steps"] == "20"
    hashes = a1111_lora_hashes(parsed["Lora hashes"])
    tags = a1111_lora_tags(parsed["Prompt"])
    expected = {"ink": ("ink.safetensors", 0.7, 0.7), "grain v2": ("styles/grain v2.safetensors", 1.25, 0.4),
                "a/dup": ("a/dup.safetensors", 1.0, 1.0), "b/dup": ("b/dup.safetensors", -0.5, -0.5),
                "oddname": ("odd:na,me.pt", 0.3, 0.3)}  # off.safetensors ran at 0/0: left out
    assert [t[0] for t in tags] == list(expected) == list(hashes)
    assert a1111_names_in_prompt(parsed["Prompt"]) == list(expected)  # what the paste handler re-links
    by_name = {r.name: r for r in ran}
    for name, te, unet in tags:
        file, expected_te, expected_unet = expected[name]
        assert (te, unet) == (expected_te, expected_unet)
        assert hashes[name].lower() == by_name[file].sha256[:10]


def test_hashes_equal_the_files_autov2(ran, tmp_path):
    field = image_metadata.a1111_hashes_field(ran)
    assert field.startswith('Lora hashes: "') and field.endswith('"')
    ink = autov2_by_hashlib((tmp_path / "ink.safetensors").read_bytes()).upper()
    grain = autov2_by_hashlib((tmp_path / "styles" / "grain v2.safetensors").read_bytes()).upper()
    assert f"ink: {ink}, grain v2: {grain}, " in field


@pytest.mark.parametrize("with_weights", [True, False])
def test_image_saver_form_round_trips_through_image_savers_parser(ran, with_weights):
    parsed = image_saver_parse(image_metadata.image_saver_hashes(ran, weights=with_weights), with_weights)
    by_name = {r.name: r for r in ran}
    expected = {"ink": "ink.safetensors", "grain v2": "styles/grain v2.safetensors", "a/dup": "a/dup.safetensors",
                "b/dup": "b/dup.safetensors", "oddname": "odd:na,me.pt"}
    assert list(parsed) == list(expected)
    for name, (weight, hash_value) in parsed.items():
        lora = by_name[expected[name]]
        assert hash_value.lower() == lora.sha256[:10]
        assert weight == (lora.strength_model if with_weights else None)


def test_image_saver_without_civitai_data_rejects_weights(ran):
    """Pinned from Image Saver's code: with download_civitai_data off, `name:HASH:weight` does not match."""
    item = image_metadata.image_saver_hashes(ran[:1]).split(",")[0]
    assert item.count(":") == 2
    assert SAVER_WITHOUT.search(item) is None and SAVER_WITH_WEIGHTS.search(item) is not None


def test_no_lora_no_metadata():
    assert image_metadata.a1111_text([]) == "" and image_metadata.image_saver_hashes([]) == ""
    assert image_metadata.a1111_hashes_field([RanLora("x.safetensors", "0" * 64, 0, 0)]) == ""


@pytest.mark.parametrize("value", [0.0001, -0.000001, 12.5, -100.0, 1 / 3])
def test_weights_are_written_without_an_exponent(value):
    text = image_metadata.plain_number(value)
    assert "e" not in text and abs(float(text) - value) <= 5e-7
    assert re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", text)


def test_non_ascii_names_stay_readable():
    lora = RanLora("猫/ねこ.safetensors", "ab" * 32, 1.0, 1.0)
    field = image_metadata.a1111_hashes_field([lora])
    assert field == 'Lora hashes: "ねこ: ABABABABAB"'
    assert prompt_tags.parse(image_metadata.a1111_tags([lora]))[1][0].name == "ねこ"
