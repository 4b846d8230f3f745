"""Butterfly OFT (LyCORIS `boft`): m stages of block rotations over butterfly-permuted rows."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import f32
from .oft import OFT, cayley, rescaled


@dataclass(frozen=True, eq=False, kw_only=True)
class BOFT(OFT):
    """The same tensors as OFT, its blocks with a stage axis in front: [stages, n, b, b].

    Strength interpolates every stage toward identity (LyCORIS' own multiplier), and `rescale` as in OFT.
    """

    kind = "boft"
    blocks_dims = 4

    def rotated(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        blocks = f32(self.blocks)  # [stages, n, b, b]
        stages, _, b, _ = blocks.shape
        r = cayley(blocks, self.constraint * weight.shape[0])
        eye = torch.eye(b, device=blocks.device)
        x = weight
        for i in range(stages):
            ri = strength * r[i] + (1 - strength) * eye
            k = 2**i * (b // 2)
            x = x.unflatten(0, (-1, 2, k)).transpose(1, 2).flatten(0, 2).unflatten(0, (-1, b))
            x = torch.einsum("bij,bj...->bi...", ri, x)
            x = x.flatten(0, 1).unflatten(0, (-1, k, 2)).transpose(1, 2).flatten(0, 2)
        return rescaled(x, self.rescale, strength)
