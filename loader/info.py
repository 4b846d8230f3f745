"""What the info panel shows about one LoRA file: `inspect.info` (its header's facts) plus what the panel
adds: size, the base model the metadata claims beside the one the keys tell, and the block energy.

Metadata is only a claim, so the base architecture comes from the keys when they tell.
"""

from __future__ import annotations

import os
import re

from . import block_guess, cache, energy, inspect, spec

_METADATA_BASES = (
    # (pattern over ss_base_model_version / modelspec.architecture, base id); first match wins
    (r"sdxl|stable-diffusion-xl", "sdxl"),
    (r"sd_?v?2|stable-diffusion-v2|sd_2", "sd2"),
    (r"sd_?v?1|stable-diffusion-v1|sd_1", "sd1"),
    (r"stable-diffusion-3|sd_?3|medium|large", "sd3"),
    (r"flux[-_.]?2|flux2", "flux2"),
    (r"chroma", "chroma"),
    (r"flux", "flux"),
)


def lora_facts(path: str | os.PathLike) -> dict:
    """The info panel's facts about the LoRA at `path` (a JSON-ready dict)."""
    facts = inspect.info(str(path))
    stat = os.stat(path)
    claimed = base_from_metadata(facts["metadata"])
    facts.update(size=stat.st_size, mtime=int(stat.st_mtime), base_from_keys=facts["base"],
                 base=facts["base"] or claimed, base_claimed=claimed)
    return facts


def base_from_metadata(meta: dict[str, str]) -> str | None:
    for field in ("modelspec.architecture", "ss_base_model_version"):
        value = str(meta.get(field) or "").lower()
        if not value:
            continue
        for pattern, base in _METADATA_BASES:
            if re.search(pattern, value):
                return base
    if str(meta.get("ss_v2", "")).lower() == "true":
        return "sd2"
    return None


# --- block energy: where in the network a LoRA changes the weights most ---------------------------------


def block_energy(path: str | os.PathLike) -> dict:
    """Each block's share of the LoRA's weight change (‖ΔW‖² per block, exact, from the factors), with
    blocks read from the LoRA's own module names (the info panel has no model to ask)."""
    return cache.shared_cache.use(str(path), _block_energy)


def _block_energy(loaded: cache.LoadedLora) -> dict:
    block_map, stand_in = block_guess.guess_from_lora(loaded.adapters, loaded.layout.base)
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
