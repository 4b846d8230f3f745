"""The weight change each adapter type makes, computed in fp32 from the file's own tensors.

Every adapter answers `delta(weight)`, the change at strength 1, and `apply_(weight, s)`, which changes a
weight in place at strength s. `linear` adapters change a weight by s·delta, and delta does not depend on
the weight (LoRA/LoCon, LoHa, LoKr, full/diff, norms); the others need the base weight (DoRA, IA³, GLoRA,
OFT, BOFT). `bias` is the change of the layer's bias at strength 1, when the file has one.

The formulas follow the producers (kohya sd-scripts, LyCORIS, PEFT) and were checked against their own
forward passes in tests/integration/test_formats.py; docs/formats.md states each one with its strength
semantics.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from . import split_qkv
from .formats import Module, glora_old_layout

_EPS = torch.finfo(torch.float32).eps


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.float32)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


@dataclass(frozen=True, eq=False, kw_only=True)
class Adapter:
    """What every adapter shares: the strength-1 change, an optional DoRA magnitude, an optional bias change."""

    scale: float = 1.0
    dora_scale: torch.Tensor | None = None  # LyCORIS convention, output or input axis
    magnitude: torch.Tensor | None = None  # PEFT convention (also ai-toolkit `.magnitude`), output axis
    bias: torch.Tensor | None = None  # change of the layer's bias at strength 1

    kind = "adapter"

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        """ΔW at strength 1 before weight decomposition, in fp32 and the weight's shape."""
        raise NotImplementedError

    @property
    def is_dora(self) -> bool:
        return self.dora_scale is not None or self.magnitude is not None

    @property
    def needs_weight(self) -> bool:
        return self.is_dora

    @property
    def linear(self) -> bool:
        return not self.needs_weight

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
        return _decompose(w + change, adapter.dora_scale, adapter.magnitude) - w

    def apply_(self, weight: torch.Tensor, strength: float) -> None:
        # DoRA too: strength interpolates the whole decomposed result, W + s·(W_dora − W) (see docs/formats.md).
        weight += (strength * self.delta(weight)).to(weight.dtype)


def _decompose(merged: torch.Tensor, dora_scale: torch.Tensor | None, magnitude: torch.Tensor | None) -> torch.Tensor:
    """DoRA: the merged weight W+ΔW rescaled to the stored magnitude, normalised by ‖W+ΔW‖ as the producers do."""
    if magnitude is not None:  # PEFT: always per output channel, [out] or conv [1, out, 1, 1]
        return _rescale_rows(merged, magnitude)
    if dora_scale.shape[0] == merged.shape[0]:  # LyCORIS wd_on_output: [out, 1(, 1, 1)]
        return _rescale_rows(merged, dora_scale)
    return _rescale_columns(merged, dora_scale)  # LyCORIS ≤ 2.x: per input channel, [1, in(, 1, 1)]


def _rescale_rows(merged: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    shape = (merged.shape[0],) + (1,) * (merged.dim() - 1)
    norm = _flat(merged).norm(dim=1).reshape(shape) + _EPS
    return _f32(magnitude).reshape(shape) * merged / norm


def _rescale_columns(merged: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    shape = (1, merged.shape[1]) + (1,) * (merged.dim() - 2)
    norm = _flat(merged.transpose(0, 1)).norm(dim=1).reshape(shape) + _EPS
    return _f32(magnitude).reshape(shape) * merged / norm


def _tucker(up: torch.Tensor, mid: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Σ up[o,m] mid[m,n,…] down[n,i] (LoCon lora_mid, GLoRA bm): up [out,r(,1,1)], down [r,in(,1,1)]."""
    return torch.einsum("mn...,om,ni->oi...", mid, _flat(up), _flat(down))


def _tucker_ab(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LoHa/LoKr Tucker: Σ t[i,j,…] a[i,p] b[j,r] with a [r,out], b [r,in] (a is transposed vs. non-Tucker)."""
    return torch.einsum("ij...,ip,jr->pr...", t, _flat(a), _flat(b))


@dataclass(frozen=True, eq=False, kw_only=True)
class LoRA(Adapter):
    """LoRA / LoCon (with Tucker `mid`), kohya, LyCORIS `locon` and PEFT: ΔW = scale · up @ down."""

    up: torch.Tensor
    down: torch.Tensor
    mid: torch.Tensor | None = None
    split_parts: int = 1  # separately trained LoRAs in this fused module (kohya Flux split_qkv), see split_qkv.py
    trained_scale: bool = False  # scale is alpha / (rank / split_parts), the trained one, not core's alpha / rank

    kind = "lora"

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        up, down = _f32(self.up), _f32(self.down)
        if self.mid is not None:
            return (self.scale * _tucker(up, _f32(self.mid), down)).reshape(weight.shape)
        # Conv LoCon: down [r,in,kh,kw] carries the kernel, up [out,r,1,1]; flat(up)@flat(down) is kohya's merge.
        return (self.scale * (_flat(up) @ _flat(down))).reshape(weight.shape)


@dataclass(frozen=True, eq=False, kw_only=True)
class LoHa(Adapter):
    """LoHa: ΔW = scale · (w1a @ w1b) ⊙ (w2a @ w2b); with Tucker t1/t2 each factor is rebuilt through its core."""

    w1a: torch.Tensor
    w1b: torch.Tensor
    w2a: torch.Tensor
    w2b: torch.Tensor
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    kind = "loha"

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        w1a, w1b, w2a, w2b = map(_f32, (self.w1a, self.w1b, self.w2a, self.w2b))
        if self.t1 is not None and self.t2 is not None:
            product = _tucker_ab(_f32(self.t1), w1a, w1b) * _tucker_ab(_f32(self.t2), w2a, w2b)
        else:
            product = (_flat(w1a) @ _flat(w1b)) * (_flat(w2a) @ _flat(w2b))
        return (self.scale * product).reshape(weight.shape)


@dataclass(frozen=True, eq=False, kw_only=True)
class LoKr(Adapter):
    """LoKr: ΔW = scale · kron(W1, W2), each factor full or a low-rank product (W2 also with Tucker t2)."""

    w1: torch.Tensor | None = None
    w1a: torch.Tensor | None = None
    w1b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2a: torch.Tensor | None = None
    w2b: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    kind = "lokr"

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        w1 = _f32(self.w1) if self.w1 is not None else _f32(self.w1a) @ _f32(self.w1b)
        if self.w2 is not None:
            w2 = _f32(self.w2)
        elif self.t2 is not None:
            w2 = _tucker_ab(_f32(self.t2), _f32(self.w2a), _f32(self.w2b))
        else:
            w2b = _f32(self.w2b)
            w2 = _f32(self.w2a) @ _flat(w2b)
            if weight.dim() > 2:  # conv: w2b is [r, d, kh, kw] (4.x) or [r, d·kh·kw] (older)
                w2 = w2.reshape(w2.shape[0], weight.shape[1] // w1.shape[1], *weight.shape[2:])
        while w1.dim() < w2.dim():
            w1 = w1.unsqueeze(-1)
        return (self.scale * torch.kron(w1.contiguous(), w2.contiguous())).reshape(weight.shape)


@dataclass(frozen=True, eq=False, kw_only=True)
class GLoRA(Adapter):
    """GLoRA (LyCORIS): ΔW = alpha/r · (b1 @ b2 + W @ a1 @ a2); b2 carries a conv kernel, or Tucker through bm.

    LyCORIS before its 2024 rewrite stored the factors the other way round (a1 [r, in], a2 [in, r], b1 [r, in],
    b2 [out, r]): ΔW = alpha/r · (b2 @ b1 + W @ a2 @ a1), what the host calls `old_glora` and A1111 reads. The
    layout is told from shapes as the host tells it (formats.glora_old_layout), with the weight's own shape
    deciding when all four factors are square.
    """

    a1: torch.Tensor
    a2: torch.Tensor
    b1: torch.Tensor
    b2: torch.Tensor
    bm: torch.Tensor | None = None
    alpha: float = 0.0  # the file's alpha; 0: scale 1

    kind = "glora"

    @property
    def needs_weight(self) -> bool:
        return True

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        shapes = [tuple(t.shape) for t in (self.a1, self.a2, self.b1, self.b2)]
        old = self.bm is None and glora_old_layout(*shapes, tuple(weight.shape))
        a1, a2, b1, b2 = (_flat(_f32(t)) for t in (self.a1, self.a2, self.b1, self.b2))
        rank = a1.shape[0] if old else a2.shape[0]
        scale = self.alpha / rank if self.alpha else 1.0
        if old:
            return scale * (b2 @ b1 + _flat(weight) @ a2 @ a1).reshape(weight.shape)
        wb = _tucker(b1, _f32(self.bm), b2) if self.bm is not None else b1 @ b2
        wa = torch.einsum("oi...,ij->oj...", weight, a1)
        wa = torch.einsum("oj...,ji->oi...", wa, a2)
        return scale * (wb.reshape(weight.shape) + wa)


@dataclass(frozen=True, eq=False, kw_only=True)
class IA3(Adapter):
    """IA³: W' = W ⊙ (1 + s·w), w per output channel, or per input channel when the file's `on_input` is 1."""

    w: torch.Tensor
    on_input: bool = False

    kind = "ia3"

    @property
    def needs_weight(self) -> bool:
        return True

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        w = _f32(self.w).flatten()
        if self.on_input:
            return weight * w.reshape((1, -1) + (1,) * (weight.dim() - 2))
        return weight * w.reshape((-1,) + (1,) * (weight.dim() - 1))


@dataclass(frozen=True, eq=False, kw_only=True)
class Full(Adapter):
    """Full / diff (LyCORIS `full`, ComfyUI `diff`) and norm-layer diffs (`w_norm`): ΔW = diff, Δbias = diff_b."""

    diff: torch.Tensor

    kind = "full"

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        return _f32(self.diff).reshape(weight.shape)


def _cayley(blocks: torch.Tensor, constraint: float) -> torch.Tensor:
    """R = (I + Q)(I − Q)⁻¹ with Q = B − Bᵀ, Q clamped to Frobenius norm `constraint` when that is > 0."""
    q = blocks - blocks.transpose(-1, -2)
    if constraint > 0:
        norm = torch.norm(q) + 1e-8
        if norm > constraint:
            q = q * constraint / norm
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype, device=blocks.device)
    return (eye + q) @ torch.linalg.inv(eye - q)


@dataclass(frozen=True, eq=False, kw_only=True)
class OFT(Adapter):
    """Diagonal OFT (LyCORIS `diag-oft`, kohya `networks.oft`): each block of output rows rotated by R_kᵀ.

    Strength m interpolates each rotation toward identity, R → m·R + (1−m)·I, as the producers do, and the
    optional `rescale` likewise, 1 + m·(rescale − 1), so that strength 0 leaves the weight untouched.
    """

    blocks: torch.Tensor  # [k, b, b]
    constraint: float = 0.0  # the file's alpha; the clamp is alpha · out_features
    rescale: torch.Tensor | None = None

    kind = "oft"

    @property
    def needs_weight(self) -> bool:
        return True

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.to(torch.float32)
        return self.on(w.device).rotated(w, 1.0) - w

    def apply_(self, weight: torch.Tensor, strength: float) -> None:
        rotated = self.on(weight.device).rotated(weight.to(torch.float32), strength)
        weight.copy_(rotated.to(weight.dtype))

    def rotated(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        blocks = _f32(self.blocks)
        r = _cayley(blocks, self.constraint * weight.shape[0])
        eye = torch.eye(blocks.shape[-1], device=blocks.device)
        r = strength * r + (1 - strength) * eye
        k, b, _ = blocks.shape
        out = torch.einsum("knm,kn...->km...", r, weight.reshape(k, b, *weight.shape[1:])).reshape(weight.shape)
        return _rescaled(out, self.rescale, strength)


def _rescaled(weight: torch.Tensor, rescale: torch.Tensor | None, strength: float) -> torch.Tensor:
    if rescale is None:
        return weight
    factor = 1 + strength * (_f32(rescale) - 1)
    return weight * factor.reshape((weight.shape[0],) + (1,) * (weight.dim() - 1))


@dataclass(frozen=True, eq=False, kw_only=True)
class BOFT(OFT):
    """Butterfly OFT (LyCORIS `boft`): m stages of block rotations over butterfly-permuted rows.

    Strength interpolates every stage toward identity (LyCORIS' own multiplier), and `rescale` as in OFT.
    """

    kind = "boft"

    def rotated(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        blocks = _f32(self.blocks)  # [stages, n, b, b]
        stages, _, b, _ = blocks.shape
        r = _cayley(blocks, self.constraint * weight.shape[0])
        eye = torch.eye(b, device=blocks.device)
        x = weight
        for i in range(stages):
            ri = strength * r[i] + (1 - strength) * eye
            k = 2**i * (b // 2)
            x = x.unflatten(0, (-1, 2, k)).transpose(1, 2).flatten(0, 2).unflatten(0, (-1, b))
            x = torch.einsum("bij,bj...->bi...", ri, x)
            x = x.flatten(0, 1).unflatten(0, (-1, k, 2)).transpose(1, 2).flatten(0, 2)
        return _rescaled(x, self.rescale, strength)


@dataclass(frozen=True, eq=False)
class BiasChange:
    """A bias change on its own (diff_b, b_norm, lora_B.bias), registered on the layer's bias."""

    bias_delta: torch.Tensor

    linear = True
    needs_weight = False
    kind = "bias"

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        return self.bias_delta.to(weight.device, torch.float32).reshape(weight.shape)

    def apply_(self, weight: torch.Tensor, strength: float) -> None:
        weight += (strength * self.delta(weight)).to(weight.dtype)


# --- building adapters from a file's tensors ------------------------------------------------------------


def alpha_scale(module: Module, tensors: dict[str, torch.Tensor], rank: int) -> float:
    """alpha / rank from the module's `.alpha` tensor (kohya, LyCORIS); no alpha (or 0) means scale 1."""
    if "alpha" not in module.parts:
        return 1.0
    alpha = float(tensors[module.parts["alpha"]].to(torch.float32).item())
    return alpha / rank if alpha else 1.0


def lora_scale(module: Module, tensors: dict[str, torch.Tensor], peft_config: dict | None) -> float:
    """alpha / rank as the producer meant it (kohya: the alpha tensor; PEFT: its saved LoraConfig)."""
    rank = tensors[module.parts["down"]].shape[0]
    if "alpha" in module.parts:
        return alpha_scale(module, tensors, rank)
    if not peft_config:
        return 1.0
    target = module.key.split(".", 1)[-1]
    rank = int(_pattern_value(peft_config.get("rank_pattern"), target, rank))
    alpha = float(_pattern_value(peft_config.get("alpha_pattern"), target, peft_config.get("lora_alpha", rank)))
    if peft_config.get("use_rslora"):
        return alpha / math.sqrt(rank)
    return alpha / rank


def _pattern_value(patterns: dict | None, target: str, default):
    for pattern, value in (patterns or {}).items():
        if target == pattern or target.endswith("." + pattern):
            return value
    return default


def _bias_change(p: dict[str, torch.Tensor], lora_scale_: float = 1.0) -> torch.Tensor | None:
    """The bias change at strength 1: PEFT's lora_B.bias (scaled like the weight), `diff_b`, `b_norm`."""
    total = None
    for role, factor in (("up_bias", lora_scale_), ("diff_b", 1.0), ("b_norm", 1.0)):
        if role in p:
            part = p[role].to(torch.float32) * factor
            total = part if total is None else total + part
    return total


def _lora(module: Module, tensors: dict[str, torch.Tensor], peft_config: dict | None, split_qkv_trained: bool):
    p = {role: tensors[name] for role, name in module.parts.items()}
    scale = lora_scale(module, tensors, peft_config)
    parts = split_qkv.parts(module.key, p["up"]) if "alpha" in module.parts else 1
    trained = parts > 1 and split_qkv_trained
    if trained:
        scale = alpha_scale(module, tensors, p["down"].shape[0] // parts)
    return LoRA(up=p["up"], down=p["down"], mid=p.get("mid"), scale=scale, bias=_bias_change(p, scale),
                dora_scale=p.get("dora_scale"), magnitude=p.get("magnitude"), split_parts=parts, trained_scale=trained)


def build(module: Module, tensors: dict[str, torch.Tensor], peft_config: dict | None = None,
          split_qkv_trained: bool = False):
    """The adapter of one module of a file (its kind was decided by formats.describe). `split_qkv_trained`: the
    file's metadata shows kohya split_qkv training, so its fused q/k/v modules get their trained scale."""
    p = {role: tensors[name] for role, name in module.parts.items()}
    dora = {"dora_scale": p.get("dora_scale"), "magnitude": p.get("magnitude")}
    kind = module.kind
    if kind == "lora":
        return _lora(module, tensors, peft_config, split_qkv_trained)
    bias = _bias_change(p)
    if kind == "loha":
        return LoHa(w1a=p["w1a"], w1b=p["w1b"], w2a=p["w2a"], w2b=p["w2b"], t1=p.get("t1"), t2=p.get("t2"),
                    scale=alpha_scale(module, tensors, p["w1b"].shape[0]), bias=bias, **dora)
    if kind == "lokr":
        if "w1b" in p:
            scale = alpha_scale(module, tensors, p["w1b"].shape[0])
        elif "w2b" in p:
            scale = alpha_scale(module, tensors, p["w2b"].shape[0])
        else:
            scale = 1.0  # both factors full: LyCORIS forces alpha = dim
        return LoKr(w1=p.get("w1"), w1a=p.get("w1a"), w1b=p.get("w1b"), w2=p.get("w2"), w2a=p.get("w2a"),
                    w2b=p.get("w2b"), t2=p.get("t2"), scale=scale, bias=bias, **dora)
    if kind == "glora":
        alpha = float(p["alpha"].to(torch.float32).item()) if "alpha" in p else 0.0
        return GLoRA(a1=p["a1"], a2=p["a2"], b1=p["b1"], b2=p["b2"], bm=p.get("bm"), alpha=alpha, bias=bias, **dora)
    if kind == "ia3":
        return IA3(w=p["ia3"], on_input=bool(p["on_input"].item()), bias=bias)
    if kind == "full":
        return Full(diff=p["diff"], bias=bias)
    if kind == "norm":
        return Full(diff=p["w_norm"], bias=bias)
    if kind in ("oft", "boft"):
        alpha = float(p["alpha"].to(torch.float32).item()) if "alpha" in p else 0.0
        cls = BOFT if p["blocks"].dim() == 4 else OFT
        return cls(blocks=p["blocks"], constraint=alpha, rescale=p.get("rescale"), bias=bias)
    if kind == "bias":
        return BiasChange(bias)
    raise ValueError(f"no math for adapter kind {kind!r}")
