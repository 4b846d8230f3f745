"""What the info panel shows about one LoRA file, read from its header (plus its alpha scalars).

Everything here comes from the file itself: the key layout (`formats.describe`) and the metadata trainers
write (kohya `ss_*`, SAI `modelspec.*`). Metadata is only a claim, so the base architecture is taken from
the keys when they tell, and the metadata's claim is shown beside it.
"""

from __future__ import annotations

import json
import os
import re

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

_BLOCK_PATTERNS = (
    (re.compile(r"input_blocks_(\d+)"), lambda m: f"IN{int(m[1]):02d}"),
    (re.compile(r"middle_block"), lambda m: "M00"),
    (re.compile(r"output_blocks_(\d+)"), lambda m: f"OUT{int(m[1]):02d}"),
    (re.compile(r"down_blocks_(\d+)_(?:attentions|resnets)_(\d+)"), lambda m: f"IN{1 + 3 * int(m[1]) + int(m[2]):02d}"),
    (re.compile(r"down_blocks_(\d+)_downsamplers"), lambda m: f"IN{3 + 3 * int(m[1]):02d}"),
    (re.compile(r"mid_block"), lambda m: "M00"),
    (re.compile(r"up_blocks_(\d+)_(?:attentions|resnets)_(\d+)"), lambda m: f"OUT{3 * int(m[1]) + int(m[2]):02d}"),
    (re.compile(r"up_blocks_(\d+)_upsamplers"), lambda m: f"OUT{3 * int(m[1]) + 2:02d}"),
    (re.compile(r"double_blocks_(\d+)"), lambda m: f"D{int(m[1]):02d}"),
    (re.compile(r"single_(?:transformer_)?blocks_(\d+)"), lambda m: f"S{int(m[1]):02d}"),
)
_FLUX_DOUBLE = re.compile(r"(?<!single_)transformer_blocks_(\d+)")


def block_of_module(key: str, is_text_encoder: bool, base: str | None) -> str | None:
    """The canonical block id (BASE, IN04, M00, OUT07, D03, S12) a LoRA module adapts, from its name alone."""
    if is_text_encoder:
        return "BASE"
    flat = key.replace(".", "_")
    for pattern, name in _BLOCK_PATTERNS:
        match = pattern.search(flat)
        if match:
            return name(match)
    if base == "flux":
        match = _FLUX_DOUBLE.search(flat)
        if match:
            return f"D{int(match[1]):02d}"
    return None


def block_energy(path: str | os.PathLike) -> dict:
    """Each block's share of the LoRA's total weight change, ‖ΔW‖_F² summed per block (LoRA modules only).

    ‖up·down‖_F² is computed without forming ΔW: trace((down·downᵀ)(upᵀ·up)), times (alpha/rank)².
    """
    header = read_header(path)
    layout = describe(header)
    base = layout.base or base_from_metadata(header.metadata)
    measurable = [m for m in layout.modules.values() if m.kind == "lora" and {"up", "down"} <= m.parts.keys()]
    names = [m.parts[r] for m in measurable for r in ("up", "down", "alpha") if r in m.parts]
    tensors = read_tensors(header, names) if names else {}
    energy: dict[str, float] = {}
    unplaced = 0
    for module in measurable:
        block = block_of_module(module.key, module.is_text_encoder, base)
        if block is None:
            unplaced += 1
            continue
        down = tensors[module.parts["down"]].float()
        up = tensors[module.parts["up"]].float()
        rank = down.shape[0]
        down, up = down.reshape(rank, -1), up.reshape(up.shape[0], -1)
        if up.shape[1] != rank:  # a mid (Tucker) factor or an odd shape: not measured here
            unplaced += 1
            continue
        alpha = float(tensors[module.parts["alpha"]].float().reshape(-1)[0]) if "alpha" in module.parts else rank
        squared = float(((down @ down.T) * (up.T @ up)).sum()) * (alpha / rank) ** 2
        energy[block] = energy.get(block, 0.0) + max(squared, 0.0)
    total = sum(energy.values()) or 1.0
    return {
        "base": base,
        "shares": {block: value / total for block, value in energy.items()},
        "measured": len(measurable) - unplaced,
        "not_measured": len(layout.modules) - len(measurable) + unplaced,
    }
