"""Which LoRA layout a file uses, read from its tensor names and shapes alone (no tensor data).

A file is split into modules: one adapted layer each, named as the file names it (the "module key",
which is what the host's key maps call a LoRA prefix), with the role of each of its tensors.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

from .files import Header

# (suffix, adapter kind or None when the tensor belongs to any kind, role). Longest suffixes first.
SUFFIXES: tuple[tuple[str, str | None, str], ...] = (
    (".lora_linear_layer.down.weight", "lora", "down"),
    (".lora_linear_layer.up.weight", "lora", "up"),
    (".lora_A.default.weight", "lora", "down"),
    (".lora_B.default.weight", "lora", "up"),
    (".lora_down.weight", "lora", "down"),
    (".lora_up.weight", "lora", "up"),
    (".lora_mid.weight", "lora", "mid"),
    (".lora.down.weight", "lora", "down"),
    (".lora.up.weight", "lora", "up"),
    ("_lora.down.weight", "lora", "down"),
    ("_lora.up.weight", "lora", "up"),
    (".lora_A.weight", "lora", "down"),
    (".lora_B.weight", "lora", "up"),
    (".lora_magnitude_vector", None, "magnitude"),
    (".dora_scale", None, "dora_scale"),
    (".alpha", None, "alpha"),
)

FAMILY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("lora_unet_", "kohya"),
    ("lora_te", "kohya"),
    ("lora_prior_", "kohya"),
    ("oft_unet_", "kohya"),
    ("lycoris_", "lycoris"),
    ("lora_transformer_", "onetrainer"),
    ("diffusion_model.", "comfyui"),
    ("text_encoders.", "comfyui"),
    ("base_model.model.", "peft"),
    ("unet.", "peft"),
    ("text_encoder", "peft"),
    ("transformer.", "peft"),
)


@dataclass(frozen=True)
class Module:
    key: str
    kind: str
    parts: dict[str, str]  # role -> tensor name

    @property
    def is_text_encoder(self) -> bool:
        return bool(re.match(r"^(lora_te\d?_|lora_prior_te_|text_encoder|text_encoders\.)", self.key))


@dataclass(frozen=True)
class Layout:
    """What a LoRA file holds, as far as its header tells."""

    family: str
    modules: dict[str, Module]
    unused: tuple[str, ...]  # tensors that belong to no module this version understands
    base: str | None  # base architecture: sd1, sd2, sdxl, sd3, flux, … or None when unknown
    adapter_kinds: tuple[str, ...]
    ranks: tuple[int, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def has_text_encoder(self) -> bool:
        return any(m.is_text_encoder for m in self.modules.values())


def split_name(name: str) -> tuple[str, str | None, str] | None:
    """(module key, kind, role) of a tensor name, or None when the name is not an adapter tensor."""
    for suffix, kind, role in SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], kind, role
    return None


def describe(header: Header) -> Layout:
    grouped: dict[str, dict[str, str]] = {}
    kinds: dict[str, str] = {}
    unused: list[str] = []
    for name in header.tensors:
        split = split_name(name)
        if split is None:
            unused.append(name)
            continue
        key, kind, role = split
        grouped.setdefault(key, {})[role] = name
        if kind is not None:
            kinds[key] = kind
    modules: dict[str, Module] = {}
    for key, parts in grouped.items():
        kind = kinds.get(key)
        if kind == "lora" and {"up", "down"} <= parts.keys():
            modules[key] = Module(key, kind, parts)
        else:
            unused.extend(parts.values())
    ranks = sorted({header.tensors[m.parts["down"]].shape[0] for m in modules.values() if "down" in m.parts})
    return Layout(
        family=_family(modules),
        modules=modules,
        unused=tuple(sorted(unused)),
        base=detect_base(header, modules),
        adapter_kinds=tuple(sorted({m.kind + ("+dora" if _is_dora(m) else "") for m in modules.values()})),
        ranks=tuple(ranks),
        metadata=dict(header.metadata),
    )


def _is_dora(module: Module) -> bool:
    return "dora_scale" in module.parts or "magnitude" in module.parts


def _family(modules: dict[str, Module]) -> str:
    votes = Counter()
    for key in modules:
        votes[next((family for prefix, family in FAMILY_PREFIXES if key.startswith(prefix)), "native")] += 1
    return votes.most_common(1)[0][0] if votes else "unknown"


def detect_base(header: Header, modules: dict[str, Module]) -> str | None:
    """The base architecture a LoRA was trained for, from key names and shapes (see research/formats.md §1.6)."""
    keys = " ".join(modules)
    if "double_blocks" in keys or "single_transformer_blocks" in keys or "single_blocks" in keys:
        return "flux"
    if "joint_blocks" in keys or ("add_q_proj" in keys and "transformer_blocks" in keys):
        return "sd3"
    if "lora_te2_" in keys or "text_encoder_2" in keys or "clip_g" in keys:
        return "sdxl"
    for module in modules.values():
        if re.search(r"attn2[._]to_k$", module.key):
            width = header.tensors[module.parts["down"]].shape[1]
            return {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(width)
    return None


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


# Spellings of one module that the host's key maps may know under another name (tried in order).
_ALIASES: tuple[tuple[re.Pattern, str], ...] = (
    # diffusers/PEFT attention in a UNet: the host only maps the old attention-processor names.
    (re.compile(r"^(unet\..*)\.(to_[qkv])$"), r"\1.processor.\2"),
    (re.compile(r"^(unet\..*)\.to_out\.0$"), r"\1.processor.to_out"),
    # transformers ≥ 5.6 dropped CLIPTextModel's `text_model` wrapper; producers on it write keys without it.
    (re.compile(r"^(text_encoder(?:_2)?)\.encoder\.layers\."), r"\1.text_model.encoder.layers."),
    (re.compile(r"^(lora_te\d?)_encoder_layers_"), r"\1_text_model_encoder_layers_"),
)


def key_candidates(module_key: str) -> list[str]:
    """The module key itself, then the other spellings under which the host may map the same layer."""
    candidates = [module_key]
    for pattern, replacement in _ALIASES:
        alias = pattern.sub(replacement, module_key)
        if alias != module_key:
            candidates.append(alias)
    return candidates
