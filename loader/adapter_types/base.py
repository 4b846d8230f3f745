"""What every adapter type is: the tensor names it takes, how it is built, its rank, its change, its norm.

An adapter type is one class (one module in this package) that answers, for itself:
- `suffixes`: the tensor-name endings that name this type, with the role each tensor plays, and
  `shared_suffixes`: endings any module may carry (alpha, DoRA magnitudes, bias diffs) that name no type;
- `required`: the role sets of which one must be present for a module to be of this type; `accepts` may look
  at shapes too (BOFT against OFT);
- `build(module, tensors, context)`: the adapter of one module of a file, from its tensors;
- `rank_from_shapes(shapes)`: the rank its alpha divides by, from the header alone (reports);
- `change(weight)`: ΔW at strength 1 (the math, in fp32), `delta(weight)` with DoRA, `apply_(weight, s)`;
- `norm(weight=None)`: the exact ‖ΔW‖_F at strength 1 (energy, Block View), from the small factors where the
  algebra allows; types whose change depends on the base weight measure it only when given the weight.

`adapter_types.REGISTRY` lists the types; nothing else in the pack names them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from . import dora

Shapes = dict[str, tuple[int, ...]]

# Tensor-name endings that every type's module may carry.
COMMON_SUFFIXES: tuple[tuple[str, str], ...] = ((".alpha", "alpha"),)


def f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.float32)


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def fro(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(f64(t)))


def lowrank_sq_norm(up: torch.Tensor, down: torch.Tensor) -> float:
    """‖U·D‖_F² from the r×r Grams: trace((UᵀU)(DDᵀ)), with U flattened to out×r and D to r×rest."""
    u = f64(up).flatten(start_dim=1)
    d = f64(down).flatten(start_dim=1)
    return float(((u.T @ u) * (d @ d.T)).sum().clamp_min(0.0))


def tucker(up: torch.Tensor, mid: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Σ up[o,m] mid[m,n,…] down[n,i] (LoCon lora_mid, GLoRA bm): up [out,r(,1,1)], down [r,in(,1,1)]."""
    return torch.einsum("mn...,om,ni->oi...", mid, flat(up), flat(down))


def tucker_ab(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LoHa/LoKr Tucker: Σ t[i,j,…] a[i,p] b[j,r] with a [r,out], b [r,in] (a is transposed vs. non-Tucker)."""
    return torch.einsum("ij...,ip,jr->pr...", t, flat(a), flat(b))


def scalar(tensors: dict[str, torch.Tensor], module, role: str, default: float = 0.0) -> float:
    """A single-number tensor of the module (alpha), or `default` when the file has none."""
    if role not in module.parts:
        return default
    return float(tensors[module.parts[role]].to(torch.float32).item())


def alpha_scale(module, tensors: dict[str, torch.Tensor], rank: int) -> float:
    """alpha / rank from the module's `.alpha` tensor (kohya, LyCORIS); no alpha (or 0) means scale 1."""
    alpha = scalar(tensors, module, "alpha")
    return alpha / rank if alpha else 1.0


def bias_change(p: dict[str, torch.Tensor], lora_scale: float = 1.0) -> torch.Tensor | None:
    """The bias change at strength 1: PEFT's lora_B.bias (scaled like the weight), `diff_b`, `b_norm`."""
    total = None
    for role, factor in (("up_bias", lora_scale), ("diff_b", 1.0), ("b_norm", 1.0)):
        if role in p:
            part = p[role].to(torch.float32) * factor
            total = part if total is None else total + part
    return total


@dataclass(frozen=True)
class BuildContext:
    """What building a module's adapter may need beyond its tensors: the file's PEFT LoraConfig for the
    module's component, whether its metadata shows kohya split_qkv training, and whether it is a BFL control
    LoRA (loader/control_lora.py)."""

    peft_config: dict | None = None
    split_qkv_trained: bool = False
    control: bool = False


class AdapterType:
    """The class-level half of an adapter type: its names, detection, building and rank (see module doc)."""

    kind: ClassVar[str] = "adapter"
    suffixes: ClassVar[tuple[tuple[str, str], ...]] = ()  # (tensor-name ending, role), naming this type
    shared_suffixes: ClassVar[tuple[tuple[str, str], ...]] = ()  # endings any type's module may carry
    required: ClassVar[tuple[frozenset[str], ...]] = ()
    aliases: ClassVar[tuple[str, ...]] = ()  # other names of the kind (energy.Factors says "diff" for full)
    weight_dependent: ClassVar[bool] = False  # its change needs the base weight (also its norm)

    @classmethod
    def accepts(cls, named: set[str], parts: dict[str, str], shapes: Shapes) -> bool:
        """Whether a module whose tensor names name the kinds `named`, with these roles, is of this type."""
        return cls.named_as() in named and any(need <= parts.keys() for need in cls.required)

    @classmethod
    def named_as(cls) -> str:
        """The kind a tensor name of this type names: its own, or that of the type whose names it inherits
        (BOFT files use OFT's names)."""
        return next(k for k in cls.__mro__ if "suffixes" in vars(k)).kind

    @classmethod
    def claim_before(cls, name: str) -> tuple[str, str] | None:
        """(module key, role) for a tensor name this type spells outside the suffix table, tried first."""
        return None

    @classmethod
    def claim_after(cls, name: str, names) -> tuple[str, str] | None:
        """(module key, role) for a name no suffix matched, knowing the file's other tensor names."""
        return None

    @classmethod
    def validate(cls, path: str, key: str, shapes: Shapes) -> None:
        """Refuse (LoraFileError) shapes from which no weight change can be computed; called on detection."""

    @classmethod
    def rank_from_shapes(cls, shapes: Shapes) -> int | None:
        """The rank a module's alpha divides by, from shapes alone; None when the type has no rank."""
        return None

    @classmethod
    def build(cls, module, tensors: dict[str, torch.Tensor], context: BuildContext):
        raise NotImplementedError


@dataclass(frozen=True, eq=False, kw_only=True)
class Adapter(AdapterType):
    """What every adapter shares: the strength-1 change, an optional DoRA magnitude, an optional bias change."""

    scale: float = 1.0
    dora_scale: torch.Tensor | None = None  # LyCORIS convention, output or input axis
    magnitude: torch.Tensor | None = None  # PEFT convention (also ai-toolkit `.magnitude`), output axis
    bias: torch.Tensor | None = None  # change of the layer's bias at strength 1

    shared_suffixes = dora.SUFFIXES

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        """ΔW at strength 1 before weight decomposition, in fp32 and the weight's shape."""
        raise NotImplementedError

    @property
    def is_dora(self) -> bool:
        return self.dora_scale is not None or self.magnitude is not None

    @property
    def needs_weight(self) -> bool:
        return self.weight_dependent or self.is_dora

    @property
    def linear(self) -> bool:
        return not self.needs_weight

    @property
    def label(self) -> str:
        """The kind as Block View names it."""
        return self.kind

    def on(self, device: torch.device) -> Adapter:
        """This adapter with its tensors on `device` (the host patches weights where they live)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        moved = {k: v.to(device) for k, v in fields.items() if isinstance(v, torch.Tensor) and v.device != device}
        return dataclasses.replace(self, **moved) if moved else self

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.to(torch.float32)
        adapter = self.on(w.device)
        change = adapter.change(w)
        if not adapter.is_dora:
            return change
        return dora.decompose(w + change, adapter.dora_scale, adapter.magnitude) - w

    def apply_(self, weight: torch.Tensor, strength: float) -> None:
        # DoRA too: strength interpolates the whole decomposed result, W + s·(W_dora − W) (see docs/formats.md).
        weight += (strength * self.delta(weight)).to(weight.dtype)

    def factor_norm(self) -> float | None:
        """‖ΔW‖ at strength 1 before DoRA from the factors alone; None when it needs the base weight."""
        return None

    def norm(self, weight: torch.Tensor | None = None) -> float | None:
        """The exact ‖ΔW‖_F at strength 1. DoRA and weight-dependent types: exact given the base weight;
        without it DoRA gives the norm of its low-rank direction and the others None (not measured)."""
        if weight is not None and self.needs_weight:
            return fro(self.delta(weight))
        return self.factor_norm()
