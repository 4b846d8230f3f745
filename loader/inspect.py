"""What a LoRA file is, as a plain dict for people: format, adapter types, base model, ranks, training metadata.

Everything comes from the header (names, shapes, dtypes, metadata); the only data read are the 0-d `.alpha`
tensors, a few bytes each. Pickled files are opened with the weights-only unpickler.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from . import files, formats, peft_config

FAMILY_LABELS = {
    "kohya": "kohya (sd-scripts, LyCORIS via kohya, A1111/Civitai)",
    "lycoris": "LyCORIS (create_lycoris, SimpleTuner)",
    "onetrainer": "OneTrainer",
    "comfyui": "ComfyUI / BFL (diffusion_model.)",
    "peft": "diffusers / PEFT",
    "diffusers-old": "diffusers (old attention-processor names)",
    "xlabs": "XLabs (x-flux)",
    "native": "native model names (BFL, DiffSynth, musubi)",
    "unknown": "unknown",
}
BASE_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD3 / SD3.5", "flux": "FLUX.1",
               "chroma": "Chroma", "auraflow": "AuraFlow", "wan": "Wan", "qwen-image": "Qwen-Image",
               "lumina2": "Lumina 2 / Z-Image"}
_BULKY = ("modelspec.thumbnail", "ss_tag_frequency", "ss_dataset_dirs", "ss_datasets", "ss_reg_dataset_dirs",
          "ss_bucket_info")


def info(source: str | os.PathLike | files.Header, read_alphas: bool = True) -> dict:
    """A JSON-ready description of a LoRA file (a path, or a Header already read)."""
    header, tensors = _header_of(source)
    layout = formats.describe(header)
    meta = header.metadata
    modules = layout.modules.values()
    return {
        "file": os.path.basename(header.path),
        "format": layout.family,
        "format_label": FAMILY_LABELS.get(layout.family, layout.family),
        "adapter_kinds": list(layout.adapter_kinds),
        "base": layout.base,
        "base_label": BASE_LABELS.get(layout.base, layout.base) if layout.base else None,
        "text_encoders": list(layout.text_encoders),
        "modules": len(layout.modules),
        "text_encoder_modules": sum(1 for m in modules if m.is_text_encoder),
        "ranks": list(layout.ranks),
        "alphas": _alphas(header, layout, tensors) if read_alphas else [],
        "dtypes": sorted({header.tensors[n].dtype for m in modules for n in m.parts.values()}),
        "tensors": len(header.tensors),
        "unused_tensors": len(layout.unused),
        "unused_examples": list(layout.unused[:5]),
        "problem": layout.problem(),
        "title": meta.get("modelspec.title") or meta.get("ss_output_name"),
        "trigger_phrase": meta.get("modelspec.trigger_phrase"),
        "description": meta.get("modelspec.description"),
        "author": meta.get("modelspec.author"),
        "architecture": meta.get("modelspec.architecture"),
        "resolution": _resolution(meta),
        "network_module": meta.get("ss_network_module"),
        "network_args": _json(meta.get("ss_network_args")) or {},
        "base_model_version": meta.get("ss_base_model_version"),
        "trained_on": meta.get("ss_sd_model_name"),
        "epochs": meta.get("ss_epoch") or meta.get("ss_num_epochs"),
        "steps": meta.get("ss_steps") or meta.get("ss_max_train_steps"),
        "tags": tag_counts(meta),
        "has_thumbnail": "modelspec.thumbnail" in meta,
        "baked_from": baked_from(meta),
        "metadata": {k: v for k, v in meta.items()
                     if k.startswith(("ss_", "sshs_", "modelspec.")) and k not in _BULKY},
    }


def baked_from(meta: dict[str, str]) -> list[dict] | None:
    """The sources a LoRA Deck bake names in its metadata (nodes/baking.py), or None."""
    sources = _json(meta.get("loradeck.baked_from"))
    if not isinstance(sources, list):
        return None
    return [s for s in sources if isinstance(s, dict) and isinstance(s.get("name"), str)] or None


def _header_of(source) -> tuple[files.Header, dict | None]:
    if isinstance(source, files.Header):
        return source, None
    path = str(source)
    if path.lower().endswith(files.PICKLE_SUFFIXES):
        tensors = files.read_pickle(path)
        infos = {n: files.TensorInfo(_dtype_name(t), tuple(t.shape), 0, 0) for n, t in tensors.items()}
        return files.Header(path, infos, {}), tensors
    return files.read_header(path), None


def _dtype_name(tensor) -> str:
    return next((name for name, dtype in files.DTYPES.items() if dtype == tensor.dtype), str(tensor.dtype))


def _alphas(header: files.Header, layout: formats.Layout, tensors: dict | None) -> list[float]:
    names = [m.parts["alpha"] for m in layout.modules.values() if "alpha" in m.parts]
    values: set[float] = set()
    if names:
        read = tensors if tensors is not None else files.read_tensors(header, names)
        values = {round(float(read[n].float().item()), 4) for n in names}
    for config in peft_config.peft_alphas(header.metadata).values():
        if "lora_alpha" in config:
            values.add(float(config["lora_alpha"]))
    return sorted(values)


def _resolution(meta: dict[str, str]) -> list[int] | None:
    raw = meta.get("modelspec.resolution") or meta.get("ss_resolution")
    if not raw:
        return None
    digits = [int(x) for x in raw.replace("x", ",").strip("()[] ").split(",") if x.strip().isdigit()]
    return digits[:2] if len(digits) >= 2 else None


def _json(raw: str | None):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


def tag_counts(metadata: dict[str, str], limit: int = 200) -> list[dict]:
    """Training-caption tags with counts, summed over kohya's dataset folders, most frequent first."""
    parsed = _json(metadata.get("ss_tag_frequency"))
    if not isinstance(parsed, dict):
        return []
    counts: Counter = Counter()
    for folder in parsed.values():
        if isinstance(folder, dict):
            for tag, count in folder.items():
                if isinstance(count, int | float):
                    counts[str(tag).strip()] += int(count)
    return [{"tag": tag, "count": count} for tag, count in counts.most_common(limit)]
