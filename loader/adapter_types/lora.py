"""LoRA / LoCon (with Tucker `mid`): kohya, LyCORIS `locon`, PEFT/diffusers, XLabs, OneTrainer, ai-toolkit."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .. import control_lora, peft_config, split_qkv
from ..files import LoraFileError
from .base import Adapter, Shapes, alpha_scale, bias_change, f32, f64, flat, lowrank_sq_norm, tucker

# XLabs (x-flux) names its LoRA layers inside attention processors: `double_blocks.0.processor.qkv_lora1.down.weight`.
_XLABS = re.compile(r"^(.*\.processor\.(?:qkv|proj)_lora[12]?)\.(down|up)\.weight$")


def lora_norm(up: torch.Tensor, down: torch.Tensor, scale: float = 1.0, mid: torch.Tensor | None = None) -> float:
    """‖s·U·D‖ from the r×r Grams; a Tucker `mid` is folded into D first, which stays r × in·kh·kw."""
    if mid is not None:
        # ΔW[o,i,h,w] = Σ_ab U[o,a]·mid[a,b,h,w]·D[b,i]; fold mid into the down side.
        down = torch.einsum("abhw,bi->aihw", f64(mid), f64(down).flatten(start_dim=1))
    return abs(scale) * math.sqrt(lowrank_sq_norm(up, down))


@dataclass(frozen=True, eq=False, kw_only=True)
class LoRA(Adapter):
    """ΔW = scale · up @ down (conv LoCon: down carries the kernel; Tucker: up @ mid @ down)."""

    up: torch.Tensor
    down: torch.Tensor
    mid: torch.Tensor | None = None
    split_parts: int = 1  # separately trained LoRAs in this fused module (kohya Flux split_qkv), see split_qkv.py
    trained_scale: bool = False  # scale is alpha / (rank / split_parts), the trained one, not core's alpha / rank
    reshape: tuple[int, ...] | None = None  # the host's reshape_weight: the weight is zero-padded to it first

    kind = "lora"
    suffixes = (
        (".lora_linear_layer.down.weight", "down"),
        (".lora_linear_layer.up.weight", "up"),
        (".lora_A.default.weight", "down"),
        (".lora_B.default.weight", "up"),
        (".lora_down.weight", "down"),
        (".lora_up.weight", "up"),
        (".lora_mid.weight", "mid"),
        (".lora.down.weight", "down"),
        (".lora.up.weight", "up"),
        ("_lora.down.weight", "down"),
        ("_lora.up.weight", "up"),
        (".lora_A.weight", "down"),
        (".lora_B.weight", "up"),
        (".lora_B.bias", "up_bias"),
        (".reshape_weight", "reshape"),
    )
    required = (frozenset({"up", "down"}),)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def label(self) -> str:
        return "dora" if self.is_dora else "lora"

    @classmethod
    def claim_before(cls, name: str) -> tuple[str, str] | None:
        xlabs = _XLABS.match(name)
        return (xlabs.group(1), xlabs.group(2)) if xlabs else None

    @classmethod
    def rank_from_shapes(cls, shapes: Shapes) -> int | None:
        shape = shapes.get("down")
        return shape[0] if shape else None

    @classmethod
    def validate(cls, path: str, key: str, shapes: Shapes) -> None:
        problem = _shape_problem(shapes)
        if problem:
            raise LoraFileError(path, f"module {key!r}: {problem}")

    @classmethod
    def build(cls, module, tensors, context):
        p = {role: tensors[name] for role, name in module.parts.items()}
        scale = lora_scale(module, tensors, context.peft_config)
        parts = split_qkv.parts(module.key, p["up"]) if "alpha" in module.parts else 1
        trained = parts > 1 and context.split_qkv_trained
        if trained:
            scale = alpha_scale(module, tensors, p["down"].shape[0] // parts)
        return cls(up=p["up"], down=p["down"], mid=p.get("mid"), scale=scale, bias=bias_change(p, scale),
                   dora_scale=p.get("dora_scale"), magnitude=p.get("magnitude"), split_parts=parts,
                   trained_scale=trained, reshape=_reshape(module, p, context))

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        up, down = f32(self.up), f32(self.down)
        if self.mid is not None:
            return (self.scale * tucker(up, f32(self.mid), down)).reshape(weight.shape)
        # Conv LoCon: down [r,in,kh,kw] carries the kernel, up [out,r,1,1]; flat(up)@flat(down) is kohya's merge.
        return (self.scale * (flat(up) @ flat(down))).reshape(weight.shape)

    def factor_norm(self) -> float:
        return lora_norm(self.up, self.down, self.scale, self.mid)


def _reshape(module, p: dict[str, torch.Tensor], context) -> tuple[int, ...] | None:
    """The shape the weight is widened to: the file's `reshape_weight`, or a control LoRA's img_in
    [lora_B rows, lora_A columns] (what the host's conversion writes)."""
    if "reshape" in p:
        return tuple(int(v) for v in p["reshape"].flatten().tolist())
    if context.control and module.key == control_lora.WIDENED:
        return (p["up"].shape[0], p["down"].shape[1])
    return None


def lora_scale(module, tensors: dict[str, torch.Tensor], config: dict | None) -> float:
    """alpha / rank as the producer meant it (kohya: the alpha tensor; PEFT: its saved LoraConfig)."""
    rank = tensors[module.parts["down"]].shape[0]
    if "alpha" in module.parts:
        return alpha_scale(module, tensors, rank)
    return peft_config.scale(config, module.key, rank)


def _shape_problem(shape: Shapes) -> str | None:
    """Why no weight change can be computed from these shapes, or None."""
    down, up, mid = shape["down"], shape["up"], shape.get("mid")
    if not 2 <= len(down) <= 5 or not 2 <= len(up) <= 5:
        return f"up {list(up)} and down {list(down)} must be matrices or conv kernels"
    if down[0] == 0 or 0 in up or 0 in down:
        return f"up {list(up)} and down {list(down)} have an empty dimension"
    if mid is None and up[1] != down[0]:
        return f"up {list(up)} and down {list(down)} disagree on the rank"
    if mid is not None and (len(mid) < 2 or mid[0] != up[1] or mid[1] != down[0]):
        return f"mid {list(mid)} does not sit between up {list(up)} and down {list(down)}"
    if "alpha" in shape and math.prod(shape["alpha"]) != 1:
        return f"alpha has shape {list(shape['alpha'])}, not a single number"
    for role in ("magnitude", "dora_scale"):
        if role in shape and math.prod(shape[role]) not in (up[0], down[1]):
            return f"{role} {list(shape[role])} fits neither the output {up[0]} nor the input {down[1]}"
    return None
