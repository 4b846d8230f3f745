"""The adapter types LoRA Deck understands: one class per type, one module per class, this one list.

Everything that asks "which kind is this module, which tensors does it take, what is its rank, its change,
its norm" asks the classes in `REGISTRY`; adding a type is one new module here and one line below
(docs/formats.md, "How to add a format"). The order is the detection order: when a module's tensors name
several kinds, the first type in the list that accepts them wins (LyCORIS' and the host's order).
"""

from __future__ import annotations

from .base import COMMON_SUFFIXES, Adapter, AdapterType, BuildContext, Shapes
from .bias import BiasChange
from .boft import BOFT
from .full import Full, Norm
from .glora import GLoRA
from .ia3 import IA3
from .loha import LoHa
from .lokr import LoKr
from .lora import LoRA
from .oft import OFT
from .set_weight import SetWeight

REGISTRY: tuple[type[AdapterType], ...] = (
    LoHa,
    LoKr,
    BOFT,
    OFT,
    GLoRA,
    Full,
    Norm,
    IA3,
    LoRA,
    BiasChange,
    SetWeight,
)

KINDS: dict[str, type[AdapterType]] = {t.kind: t for t in REGISTRY}
_NAMES: dict[str, type[AdapterType]] = {**{a: t for t in REGISTRY for a in t.aliases}, **KINDS}


def suffix_table() -> tuple[tuple[str, str | None, str], ...]:
    """(tensor-name ending, kind it names or None, role) for every type, longest endings first."""
    rows: dict[tuple[str, str | None, str], None] = {}
    for t in REGISTRY:
        if "suffixes" in vars(t):  # a type that takes another's names (BOFT: OFT's) adds no row
            rows.update(dict.fromkeys((suffix, t.kind, role) for suffix, role in t.suffixes))
    for t in REGISTRY:
        rows.update(dict.fromkeys((suffix, None, role) for suffix, role in t.shared_suffixes))
    rows.update(dict.fromkeys((suffix, None, role) for suffix, role in COMMON_SUFFIXES))
    return tuple(sorted(rows, key=lambda row: -len(row[0])))


def named(kind: str) -> type[AdapterType] | None:
    """The type of a kind name (or one of its aliases), None when no type has it."""
    return _NAMES.get(kind)


def type_of(named_kinds: set[str], parts: dict[str, str], shapes: Shapes) -> type[AdapterType] | None:
    """The type of a module whose tensor names name `named_kinds`, with these roles and shapes."""
    return next((t for t in REGISTRY if t.accepts(named_kinds, parts, shapes)), None)


def build(module, tensors, peft_config: dict | None = None, split_qkv_trained: bool = False, control: bool = False):
    """The adapter of one module of a file (its kind was decided by formats.describe). `split_qkv_trained`: the
    file's metadata shows kohya split_qkv training, so its fused q/k/v modules get their trained scale; `control`:
    the file is a BFL control LoRA (loader/control_lora.py)."""
    adapter_type = KINDS.get(module.kind)
    if adapter_type is None:
        raise ValueError(f"no math for adapter kind {module.kind!r}")
    return adapter_type.build(module, tensors, BuildContext(peft_config, split_qkv_trained, control))


__all__ = [
    "BOFT",
    "IA3",
    "KINDS",
    "OFT",
    "REGISTRY",
    "Adapter",
    "AdapterType",
    "BiasChange",
    "BuildContext",
    "Full",
    "GLoRA",
    "LoHa",
    "LoKr",
    "LoRA",
    "Norm",
    "SetWeight",
    "build",
    "named",
    "suffix_table",
    "type_of",
]
