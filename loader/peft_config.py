"""PEFT's LoraConfig as diffusers saves it in a file's metadata, and the alpha / rank it gives a module."""

from __future__ import annotations

import json
import math


def peft_alphas(metadata: dict[str, str]) -> dict[str, dict]:
    """PEFT's LoraConfig per component (unet, text_encoder, transformer …) from diffusers' metadata."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    configs: dict[str, dict] = {}
    for name, value in parsed.items():
        component, dot, field_name = name.partition(".")
        if dot and field_name in {"r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "use_dora"}:
            configs.setdefault(component, {})[field_name] = value
        elif isinstance(value, dict):
            configs[name] = value
    if "r" in parsed or "lora_alpha" in parsed:
        configs.setdefault("", parsed)
    return configs



def scale(config: dict | None, module_key: str, rank: int) -> float:
    """alpha / rank of one module by its component's LoraConfig (rank and alpha patterns, rsLoRA); no config:
    scale 1 (the file says nothing about alpha)."""
    if not config:
        return 1.0
    target = module_key.split(".", 1)[-1]
    rank = int(_pattern_value(config.get("rank_pattern"), target, rank))
    alpha = float(_pattern_value(config.get("alpha_pattern"), target, config.get("lora_alpha", rank)))
    if config.get("use_rslora"):
        return alpha / math.sqrt(rank)
    return alpha / rank


def _pattern_value(patterns: dict | None, target: str, default):
    for pattern, value in (patterns or {}).items():
        if target == pattern or target.endswith("." + pattern):
            return value
    return default
