"""Diagonal OFT (LyCORIS `diag-oft`, kohya `networks.oft`): blocks of output rows rotated by Cayley rotations."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Adapter, Shapes, bias_change, f32, fro, scalar


def cayley(blocks: torch.Tensor, constraint: float) -> torch.Tensor:
    """R = (I + Q)(I − Q)⁻¹ with Q = B − Bᵀ, Q clamped to Frobenius norm `constraint` when that is > 0."""
    q = blocks - blocks.transpose(-1, -2)
    if constraint > 0:
        norm = torch.norm(q) + 1e-8
        if norm > constraint:
            q = q * constraint / norm
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype, device=blocks.device)
    return (eye + q) @ torch.linalg.inv(eye - q)


def rescaled(weight: torch.Tensor, rescale: torch.Tensor | None, strength: float) -> torch.Tensor:
    if rescale is None:
        return weight
    factor = 1 + strength * (f32(rescale) - 1)
    return weight * factor.reshape((weight.shape[0],) + (1,) * (weight.dim() - 1))


@dataclass(frozen=True, eq=False, kw_only=True)
class OFT(Adapter):
    """Each block of output rows rotated by R_kᵀ.

    Strength m interpolates each rotation toward identity, R → m·R + (1−m)·I, as the producers do, and the
    optional `rescale` likewise, 1 + m·(rescale − 1), so that strength 0 leaves the weight untouched.
    """

    blocks: torch.Tensor  # [k, b, b]
    constraint: float = 0.0  # the file's alpha; the clamp is alpha · out_features
    rescale: torch.Tensor | None = None

    kind = "oft"
    suffixes = ((".oft_blocks", "blocks"),)
    shared_suffixes = ((".rescale", "rescale"),)
    required = (frozenset({"blocks"}),)
    weight_dependent = True
    blocks_dims = 3  # [k, b, b]; BOFT's have a stage axis in front

    @classmethod
    def accepts(cls, named: set[str], parts: dict[str, str], shapes: Shapes) -> bool:
        return super().accepts(named, parts, shapes) and (len(shapes["blocks"]) == 4) == (cls.blocks_dims == 4)

    @classmethod
    def build(cls, module, tensors, context):
        p = {role: tensors[name] for role, name in module.parts.items()}
        return cls(blocks=p["blocks"], constraint=scalar(tensors, module, "alpha"), rescale=p.get("rescale"),
                   bias=bias_change(p))

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.to(torch.float32)
        return self.on(w.device).rotated(w, 1.0) - w

    def apply_(self, weight: torch.Tensor, strength: float) -> None:
        rotated = self.on(weight.device).rotated(weight.to(torch.float32), strength)
        weight.copy_(rotated.to(weight.dtype))

    def norm(self, weight: torch.Tensor | None = None) -> float | None:
        return None if weight is None else fro(self.delta(weight))

    def rotated(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        blocks = f32(self.blocks)
        r = cayley(blocks, self.constraint * weight.shape[0])
        eye = torch.eye(blocks.shape[-1], device=blocks.device)
        r = strength * r + (1 - strength) * eye
        k, b, _ = blocks.shape
        out = torch.einsum("knm,kn...->km...", r, weight.reshape(k, b, *weight.shape[1:])).reshape(weight.shape)
        return rescaled(out, self.rescale, strength)
