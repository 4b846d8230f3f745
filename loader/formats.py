"""Which LoRA layout a file uses, read from its tensor names and shapes alone (no tensor data).

A file is split into modules: one adapted layer each, named as the file names it (the "module key",
which is what the host's key maps call a LoRA prefix), with the role of each of its tensors. Which tensor
names belong to which adapter type, and which type a module is, the types say (loader/adapter_types/).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from . import adapter_types, base_model
from .adapter_types import dora
from .files import Header, LoraFileError

# (suffix, adapter kind or None when the tensor belongs to any kind, role), longest first: from the registry.
SUFFIXES: tuple[tuple[str, str | None, str], ...] = adapter_types.suffix_table()

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
_OLD_DIFFUSERS_ROLES = (".lora.down.weight", ".lora.up.weight", ".lora_linear_layer.", "_lora.down.weight",
                        "_lora.up.weight")


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
    text_encoders: tuple[str, ...] = ()

    @property
    def has_text_encoder(self) -> bool:
        return any(m.is_text_encoder for m in self.modules.values())

    def problem(self) -> str | None:
        """Why this file cannot be used as a LoRA at all, or None when it can."""
        if self.modules:
            return None
        if not self.unused:
            return "holds no tensors"
        return (f"has no adapter this version understands ({len(self.unused)} tensors in an unknown layout, "
                f"e.g. {self.unused[0]!r})")


def split_name(name: str, names=()) -> tuple[str, str | None, str] | None:
    """(module key, kind, role) of a tensor name, or None when the name is not an adapter tensor. `names`: the
    file's other tensor names, for types that tell a tensor by its neighbours (IA³)."""
    for adapter_type in adapter_types.REGISTRY:
        claimed = adapter_type.claim_before(name)
        if claimed:
            return claimed[0], adapter_type.kind, claimed[1]
    for suffix, kind, role in SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], kind, role
    for adapter_type in adapter_types.REGISTRY:
        claimed = adapter_type.claim_after(name, names)
        if claimed:
            return claimed[0], adapter_type.kind, claimed[1]
    return None


def describe(header: Header) -> Layout:
    grouped, kinds, unused = _group(header)
    modules: dict[str, Module] = {}
    for key, parts in grouped.items():
        shapes = {role: tuple(header.tensors[name].shape) for role, name in parts.items()}
        adapter_type = adapter_types.type_of(kinds.get(key, set()), parts, shapes)
        if adapter_type is None:
            unused.extend(parts.values())
            continue
        adapter_type.validate(header.path, key, shapes)
        modules[key] = Module(key, adapter_type.kind, parts)
    return Layout(
        family=_family(modules),
        modules=modules,
        unused=tuple(sorted(unused)),
        base=base_model.detect_base(header, modules),
        adapter_kinds=tuple(sorted({m.kind + ("+dora" if dora.is_dora(m.parts) else "") for m in modules.values()})),
        ranks=tuple(sorted({r for m in modules.values() if (r := module_rank(header, m)) is not None})),
        metadata=dict(header.metadata),
        text_encoders=base_model.text_encoder_parts(header, modules),
    )


def _group(header: Header) -> tuple[dict[str, dict[str, str]], dict[str, set[str]], list[str]]:
    """The file's tensors by module key (role -> name), the kinds each module's names name, the rest."""
    grouped: dict[str, dict[str, str]] = {}
    kinds: dict[str, set[str]] = {}
    unused: list[str] = []
    for name in header.tensors:
        split = split_name(name, header.tensors)
        if split is None:
            unused.append(name)
            continue
        key, kind, role = split
        key = _kohya_key(key)
        parts = grouped.setdefault(key, {})
        if role in parts:  # e.g. lora_down and lora_A for one layer: which one the author meant is unknowable
            first, second = sorted((parts[role], name))
            raise LoraFileError(header.path, f"module {key!r} is given twice: {first!r} and {second!r}")
        parts[role] = name
        if kind is not None:
            kinds.setdefault(key, set()).add(kind)
    return grouped, kinds, unused


def module_rank(header: Header, module: Module) -> int | None:
    """The rank a module's alpha divides by, from shapes alone (its type says how)."""
    shapes = {role: tuple(header.tensors[name].shape) for role, name in module.parts.items()}
    return adapter_types.KINDS[module.kind].rank_from_shapes(shapes)


_UNDERSCORE_FAMILIES = ("lora_unet_", "lora_te", "lora_prior_", "lycoris_", "lora_transformer_", "oft_unet_")


def _kohya_key(key: str) -> str:
    """kohya-style ids join the model path with `_`; some tools leave dots in them (diffusers' kohya converter
    on DoRA magnitudes: `lora_unet_…_attn1.to_q.lora_magnitude_vector`; `lora_te1.text_model.…`)."""
    return key.replace(".", "_") if "." in key and key.startswith(_UNDERSCORE_FAMILIES) else key


def family_of(module: Module) -> str:
    if ".processor." in module.key and module.key.rsplit(".", 1)[-1].startswith(("qkv_lora", "proj_lora")):
        return "xlabs"
    if any(name.endswith(_OLD_DIFFUSERS_ROLES) or "_lora.down" in name for name in module.parts.values()):
        return "diffusers-old"
    return next((family for prefix, family in FAMILY_PREFIXES if module.key.startswith(prefix)), "native")


def _family(modules: dict[str, Module]) -> str:
    votes = Counter(family_of(m) for m in modules.values())
    if not votes:
        return "unknown"
    if votes.get("diffusers-old") and votes.get("peft"):
        return "diffusers-old"  # old diffusers files keep lora_A/B on the layers it did not rename
    return votes.most_common(1)[0][0]


