"""The LoRAs of a run as image galleries read them: A1111's `parameters` text and Image Saver's hashes.

A1111 form (what Civitai parses from an A1111 image's `parameters`): the `<lora:name:multiplier>` tags
go into the prompt, and the settings line carries `Lora hashes: "name1: HASH1, name2: HASH2"`, quoted as
A1111's infotext `quote()` does (JSON, non-ASCII kept). A1111 (extensions-builtin/Lora) writes each
name as the tag mentions it with `:` and `,` removed; its paste handler splits the field at `,`, then
each item at the first `:`, and matches the names against the prompt's `<lora:NAME:` tags. Here each
name is the file's stem (the name A1111 lists a LoRA by), with `:`, `,`, `<` and `>` removed; two
different files with one stem are named by their relative paths instead.

The hash is AutoV2, the first 10 hex digits of the SHA-256 of the whole file, as Civitai shows it and
as Image Saver and Civitai's own A1111 extension write it. (A1111 itself writes the first 12 hex digits
of the SHA-256 of the tensor data after the safetensors header, Civitai's "AutoV3"; Civitai indexes
both.) Strengths: `<lora:name:te>` when the model and clip strengths agree, else `<lora:name:te:unet>`
in A1111's positional order. Block weights are not written (no gallery reads them).

Image Saver form (alexopus/ComfyUI-Image-Saver, its `additional_hashes` input): `name:HASH:weight`
items joined by `,`, weight = the model strength, written without an exponent (its weight pattern has
none). That is the form for Image Saver's default (`download_civitai_data` on); with it off, Image Saver
rejects items with a weight and reads `name:HASH` (weights=False).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .hashes import autov2
from .prompt_tags import format_tag

_UNSAFE = str.maketrans("", "", ":,<>\n\r\"")


@dataclass(frozen=True)
class RanLora:
    """One LoRA that ran: its relative name in the loras folders, the file's SHA-256 and its strengths."""

    name: str
    sha256: str
    strength_model: float
    strength_clip: float


def labels(loras: list[RanLora]) -> list[str]:
    """The name each LoRA gets in the metadata: its stem, or its relative path where stems collide."""
    stems = [_clean(_stem(r.name)) for r in loras]
    files_by_stem: dict[str, set[str]] = {}
    for stem, ran in zip(stems, loras, strict=True):
        files_by_stem.setdefault(stem, set()).add(ran.name)
    return [(_clean(os.path.splitext(r.name.replace("\\", "/"))[0]) if len(files_by_stem[s]) > 1 else s) or "lora"
            for s, r in zip(stems, loras, strict=True)]


def active(loras: list[RanLora]) -> list[RanLora]:
    """The LoRAs that change anything (both strengths 0 = left out, as A1111 skips them)."""
    return [r for r in loras if r.strength_model != 0 or r.strength_clip != 0]


def a1111_tags(loras: list[RanLora]) -> str:
    ran = active(loras)
    return " ".join(format_tag(label, r.strength_clip, r.strength_model) for label, r in zip(labels(ran), ran,
                                                                                            strict=True))


def a1111_hashes_field(loras: list[RanLora]) -> str:
    """`Lora hashes: "name: HASH, …"` for the settings line ("" when no LoRA ran)."""
    ran = active(loras)
    pairs: dict[str, str] = {}
    for label, r in zip(labels(ran), ran, strict=True):
        pairs.setdefault(label, autov2(r.sha256))
    if not pairs:
        return ""
    value = ", ".join(f"{label}: {short}" for label, short in pairs.items())
    return f"Lora hashes: {json.dumps(value, ensure_ascii=False)}"


def a1111_text(loras: list[RanLora]) -> str:
    """The prompt node's image-metadata output: the tags (a line for the prompt), then the hashes field."""
    tags = a1111_tags(loras)
    return f"{tags}\n{a1111_hashes_field(loras)}" if tags else ""


def image_saver_hashes(loras: list[RanLora], weights: bool = True) -> str:
    """Image Saver's `additional_hashes`: `name:HASH:weight,…` (its default, download_civitai_data on), or
    `name:HASH,…` (weights=False; with download_civitai_data off Image Saver rejects an item with a weight)."""
    ran = active(loras)
    return ",".join(f"{label}:{autov2(r.sha256)}" + (f":{plain_number(r.strength_model)}" if weights else "")
                    for label, r in zip(labels(ran), ran, strict=True))


def plain_number(value: float) -> str:
    """A number without an exponent, to 6 decimals (strengths lie within ±100)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _stem(name: str) -> str:
    return os.path.splitext(name.replace("\\", "/").rsplit("/", 1)[-1])[0]


def _clean(text: str) -> str:
    return text.translate(_UNSAFE).strip()
