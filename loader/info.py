"""What the info panel shows about one LoRA file, read from its header (plus its alpha scalars).

Everything here comes from the file itself: the key layout (`formats.describe`) and the metadata trainers
write (kohya `ss_*`, SAI `modelspec.*`). Metadata is only a claim, so the base architecture is taken from
the keys when they tell, and the metadata's claim is shown beside it.
"""

from __future__ import annotations

import json
import os
import re

from . import blocks, cache, energy, spec
from .files import PICKLE_SUFFIXES, read_header, read_tensors
from .formats import describe

MAX_TAGS = 300
_METADATA_BASES = (
    # (pattern over ss_base_model_version / modelspec.architecture, base id); first match wins
    (r"sdxl|stable-diffusion-xl", "sdxl"),
    (r"sd_?v?2|stable-diffusion-v2|sd_2", "sd2"),
    (r"sd_?v?1|stable-diffusion-v1|sd_1", "sd1"),
    (r"stable-diffusion-3|sd_?3|medium|large", "sd3"),
    (r"flux[-_.]?2|flux2", "flux2"),
    (r"flux|chroma", "flux"),
)


def lora_facts(path: str | os.PathLike) -> dict:
    """The info panel's facts about the LoRA at `path` (a JSON-ready dict)."""
    path = str(path)
    stat = os.stat(path)
    facts: dict = {"size": stat.st_size, "mtime": int(stat.st_mtime)}
    if path.lower().endswith(PICKLE_SUFFIXES):
        facts.update(file_type="pickle", note="pickled LoRAs are not opened for inspection; convert to .safetensors")
        return facts
    header = read_header(path)
    layout = describe(header)
    meta = header.metadata
    claimed = base_from_metadata(meta)
    facts.update(
        file_type="safetensors",
        family=layout.family,
        adapters=list(layout.adapter_kinds),
        base=layout.base or claimed,
        base_claimed=claimed,
        ranks=list(layout.ranks),
        alphas=_alphas(header, layout),
        modules=len(layout.modules),
        text_encoder_modules=sum(1 for m in layout.modules.values() if m.is_text_encoder),
        unused_tensors=len(layout.unused),
        tensors=len(header.tensors),
        dtypes=sorted({t.dtype for t in header.tensors.values()}),
        resolution=_resolution(meta),
        title=meta.get("modelspec.title") or meta.get("ss_output_name") or "",
        trigger=meta.get("modelspec.trigger_phrase", ""),
        tags=tag_counts(meta),
        training=_training(meta),
        metadata_keys=len(meta),
    )
    return facts


def base_from_metadata(meta: dict[str, str]) -> str | None:
    for field in ("modelspec.architecture", "ss_base_model_version"):
        value = meta.get(field, "").lower()
        if not value:
            continue
        for pattern, base in _METADATA_BASES:
            if re.search(pattern, value):
                return base
    if meta.get("ss_v2", "").lower() == "true":
        return "sd2"
    return None


def tag_counts(meta: dict[str, str]) -> list[list]:
    """Training tags with how often they were used, most used first (kohya `ss_tag_frequency`)."""
    raw = meta.get("ss_tag_frequency")
    if not raw:
        return []
    try:
        by_folder = json.loads(raw)
    except json.JSONDecodeError:
        return []
    counts: dict[str, int] = {}
    if isinstance(by_folder, dict):
        for tags in by_folder.values():
            if not isinstance(tags, dict):
                continue
            for tag, count in tags.items():
                tag = str(tag).strip()
                if tag and isinstance(count, (int, float)):
                    counts[tag] = counts.get(tag, 0) + int(count)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [[tag, count] for tag, count in ranked[:MAX_TAGS]]


def _alphas(header, layout) -> list[float]:
    names = [m.parts["alpha"] for m in layout.modules.values()
             if "alpha" in m.parts and header.tensors[m.parts["alpha"]].shape in ((), (1,))]
    if not names:
        return []
    values = {round(float(t.float().reshape(-1)[0]), 4) for t in read_tensors(header, names).values()}
    return sorted(values)


def _resolution(meta: dict[str, str]) -> str:
    spec = meta.get("modelspec.resolution", "")
    if spec:
        return spec
    numbers = re.findall(r"\d+", meta.get("ss_resolution", ""))
    return "x".join(numbers[:2]) if numbers else ""


def _training(meta: dict[str, str]) -> dict[str, str]:
    wanted = {
        "network_module": "ss_network_module", "dim": "ss_network_dim", "alpha": "ss_network_alpha",
        "network_args": "ss_network_args", "base_model": "ss_sd_model_name",
        "base_version": "ss_base_model_version", "architecture": "modelspec.architecture",
        "epochs": "ss_num_epochs", "steps": "ss_steps", "images": "ss_num_train_images",
        "author": "modelspec.author", "license": "modelspec.license", "date": "modelspec.date",
    }
    return {label: meta[key] for label, key in wanted.items() if meta.get(key) not in (None, "", "None")}


# --- block energy: where in the network a LoRA changes the weights most ---------------------------------


def block_energy(path: str | os.PathLike) -> dict:
    """Each block's share of the LoRA's weight change (‖ΔW‖² per block, exact, from the factors), with
    blocks read from the LoRA's own module names (the info panel has no model to ask)."""
    loaded = cache.shared_cache.load(str(path))
    block_map, stand_in = blocks.guess_from_lora(loaded.adapters, loaded.layout.base)
    entries = [energy.KeyEnergy(stand_in[key], None, *energy.adapter_norm(adapter))
               for key, adapter in loaded.adapters.items()]
    table = energy.table(entries, spec.parse("", block_map))
    rows = table.rows.values()
    return {
        "base": loaded.layout.base or base_from_metadata(loaded.header.metadata),
        "blocks": list(block_map.ids),
        "shares": {b: table.share(b) for b in block_map.ids if table.rows[b].energy > 0},
        "measured": sum(r.keys - r.unmeasured for r in rows),
        "not_measured": sum(r.unmeasured for r in rows) + len(table.unplaced),
    }
