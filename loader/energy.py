"""Where a LoRA acts: the exact Frobenius norm ‖ΔW‖ of every patch and its share per block.

Each adapter type measures itself (`norm` in loader/adapter_types/), from the small factors wherever the
algebra allows, never from the full delta:
- LoRA/LoCon ΔW = s·U·D:  ‖ΔW‖² = s²·Σ((UᵀU) ⊙ (DDᵀ))  (only r×r Gram matrices; a Tucker `mid` is folded
  into D first, which stays r × in·kh·kw);
- LoKr ΔW = s·(W1 ⊗ W2):  ‖ΔW‖ = |s|·‖W1‖·‖W2‖, each factor's norm again by the Gram trick when low-rank;
- full diffs and bias changes: ‖d‖; LoHa (a Hadamard product of two low-rank products) is materialised.
Changes that depend on the base weight (GLoRA, IA³, OFT, BOFT, and DoRA's re-normalisation) are exact when
the weight is given (Block View with a model connected) and computed from it; without it GLoRA, IA³, OFT and
BOFT are not measured and DoRA gives the norm of its low-rank direction, flagged.
Blocks add their keys' norms in quadrature (the patched weights are disjoint), so shares are energy shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import adapter_types
from .adapter_types.lora import lora_norm
from .blocks import BlockMap, compress_ids
from .spec import BlockWeights

__all__ = ["Factors", "KeyEnergy", "adapter_norm", "delta_norm", "lora_norm", "table"]


@dataclass(frozen=True)
class Factors:
    """One patch's delta as plain tensors, named as the file names them: kind is a registered type's kind or
    alias ("diff" for full). `scale` is the resolved multiplier (alpha / rank), `dora` marks a DoRA magnitude."""

    kind: str
    tensors: dict[str, torch.Tensor | None]
    scale: float = 1.0
    dora: bool = False


def delta_norm(factors: Factors) -> float | None:
    """‖ΔW‖_F of one patch at strength 1, or None when its kind is unknown or needs the base weight."""
    adapter_type = adapter_types.named(factors.kind)
    if adapter_type is None or adapter_type.weight_dependent or not issubclass(adapter_type, adapter_types.Adapter):
        return None
    fields = {name.replace("_", ""): t for name, t in factors.tensors.items()}
    return adapter_type(scale=factors.scale, **fields).norm()


@dataclass(frozen=True)
class KeyEnergy:
    model_key: str
    offset: tuple[int, int, int] | None
    kind: str
    norm: float | None  # None: not measured
    dora: bool = False


@dataclass
class BlockRow:
    block: str
    ratio: float  # the block's value; element rules may change single keys (see `applied`)
    keys: int = 0
    unmeasured: int = 0
    energy: float = 0.0  # Σ‖ΔW‖² at strength 1
    applied_energy: float = 0.0  # Σ(ratio_key·‖ΔW‖)²
    kinds: set[str] = field(default_factory=set)

    @property
    def norm(self) -> float:
        return math.sqrt(self.energy)

    @property
    def applied(self) -> float:
        return math.sqrt(self.applied_energy)


@dataclass
class EnergyTable:
    block_map: BlockMap
    rows: dict[str, BlockRow]
    unplaced: list[str]  # patch keys the model has no slot for
    dora_keys: int = 0

    @property
    def total_energy(self) -> float:
        return sum(r.energy for r in self.rows.values())

    def share(self, block: str) -> float:
        total = self.total_energy
        return self.rows[block].energy / total if total > 0 else 0.0

    def top_blocks(self, fraction: float = 0.9) -> list[str]:
        """The fewest blocks that together hold `fraction` of the energy, strongest first."""
        ranked = sorted((r for r in self.rows.values() if r.energy > 0), key=lambda r: -r.energy)
        total, held, out = self.total_energy, 0.0, []
        for row in ranked:
            if total <= 0 or held >= fraction * total:
                break
            out.append(row.block)
            held += row.energy
        return out

    def format(self, title: str = "") -> str:
        lines = [title] if title else []
        lines.append(f"{'block':<8}{'ratio':>8}{'keys':>6}{'‖ΔW‖':>11}{'share':>8}{'applied':>11}  kinds")
        for block in self.block_map.ids:
            row = self.rows[block]
            if row.keys == 0:
                continue
            unmeasured = f" ({row.unmeasured} not measured)" if row.unmeasured else ""
            lines.append(f"{block:<8}{row.ratio:>8.3g}{row.keys:>6}{row.norm:>11.4g}"
                         f"{100 * self.share(block):>7.1f}%{row.applied:>11.4g}  "
                         f"{','.join(sorted(row.kinds))}{unmeasured}")
        silent = [b for b in self.block_map.blocks if self.rows[b].keys == 0]
        total = math.sqrt(self.total_energy)
        applied = math.sqrt(sum(r.applied_energy for r in self.rows.values()))
        lines.append(f"total ‖ΔW‖ {total:.4g}, after block weights {applied:.4g}")
        top = self.top_blocks()
        if top:
            lines.append(f"90% of the energy is in {len(top)} block(s): {' '.join(top)}")
        if silent:
            lines.append(f"blocks this LoRA does not touch: {compress_ids(silent)}")
        if self.dora_keys:
            lines.append(f"{self.dora_keys} DoRA key(s): norm of the low-rank direction, before the "
                         "magnitude re-normalisation")
        if self.unplaced:
            lines.append(f"{len(self.unplaced)} patch key(s) outside the model's blocks: "
                         f"{', '.join(self.unplaced[:5])}{' …' if len(self.unplaced) > 5 else ''}")
        return "\n".join(lines)


def table(entries: list[KeyEnergy], weights: BlockWeights) -> EnergyTable:
    block_map = weights.block_map
    rows = {b: BlockRow(b, weights.by_block.get(b, weights.default)) for b in block_map.ids}
    unplaced: list[str] = []
    dora = 0
    for entry in entries:
        block = block_map.block_of(entry.model_key)
        if block is None:
            unplaced.append(entry.model_key)
            continue
        row = rows[block]
        row.keys += 1
        row.kinds.add(entry.kind)
        dora += entry.dora
        if entry.norm is None:
            row.unmeasured += 1
            continue
        ratio = weights.ratio(entry.model_key, entry.offset)
        row.energy += entry.norm ** 2
        row.applied_energy += (ratio * entry.norm) ** 2
    return EnergyTable(block_map, rows, unplaced, dora)


def adapter_norm(adapter, weight: torch.Tensor | None = None) -> tuple[str, float | None, bool]:
    """(kind, ‖ΔW‖ at strength 1 or None when not measured, DoRA measured without its weight?) of one adapter.

    `weight`: the base weight the adapter patches (the slice it patches), when known; with it every type's
    norm is exact, DoRA's and the weight-dependent types' included. Without it (or when the adapter does not
    fit it) GLoRA, IA³, OFT and BOFT are not measured and DoRA is measured before its re-normalisation.
    """
    if weight is not None:
        try:
            return adapter.label, adapter.norm(weight.detach().to(torch.float32)), False
        except (RuntimeError, ValueError, IndexError):  # a weight its shapes do not fit: measured without it
            pass
    return adapter.label, adapter.norm(), bool(adapter.is_dora)
