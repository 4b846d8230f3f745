"""Where a LoRA acts: the exact Frobenius norm ‖ΔW‖ of every patch and its share per block.

Norms come from the small factors wherever the algebra allows, never from the full delta:
- LoRA/LoCon ΔW = s·U·D:  ‖ΔW‖² = s²·Σ((UᵀU) ⊙ (DDᵀ))  (only r×r Gram matrices; a Tucker `mid` is folded
  into D first, which stays r × in·kh·kw);
- LoKr ΔW = s·(W1 ⊗ W2):  ‖ΔW‖ = |s|·‖W1‖·‖W2‖, each factor's norm again by the Gram trick when low-rank;
- full diffs: ‖d‖.
LoHa (a Hadamard product of two low-rank products) has no such shortcut and is materialised. DoRA deltas
depend on the base weight; they are measured without the magnitude re-normalisation and flagged.
Blocks add their keys' norms in quadrature (the patched weights are disjoint), so shares are energy shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .blocks import BlockMap, compress_ids
from .spec import BlockWeights


@dataclass(frozen=True)
class Factors:
    """One patch's delta as plain tensors: kind is "lora", "lokr", "loha", "diff" or anything else
    (unmeasured). `scale` is the resolved multiplier (alpha / rank), `dora` marks a DoRA magnitude."""

    kind: str
    tensors: dict[str, torch.Tensor | None]
    scale: float = 1.0
    dora: bool = False


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


def lowrank_sq_norm(up: torch.Tensor, down: torch.Tensor) -> float:
    """‖U·D‖_F² from the r×r Grams: trace((UᵀU)(DDᵀ)), with U flattened to out×r and D to r×rest."""
    u = _f64(up).flatten(start_dim=1)
    d = _f64(down).flatten(start_dim=1)
    return float(((u.T @ u) * (d @ d.T)).sum().clamp_min(0.0))


def lora_norm(up: torch.Tensor, down: torch.Tensor, scale: float = 1.0,
              mid: torch.Tensor | None = None) -> float:
    if mid is not None:
        # Tucker/LoCon: ΔW[o,i,h,w] = Σ_ab U[o,a]·mid[a,b,h,w]·D[b,i]; fold mid into the down side.
        down = torch.einsum("abhw,bi->aihw", _f64(mid), _f64(down).flatten(start_dim=1))
    return abs(scale) * math.sqrt(lowrank_sq_norm(up, down))


def lokr_norm(tensors: dict[str, torch.Tensor | None], scale: float = 1.0) -> float:
    def factor(full: str, a: str, b: str, tucker: str | None = None) -> float:
        if tensors.get(full) is not None:
            return float(torch.linalg.vector_norm(_f64(tensors[full])))
        if tucker and tensors.get(tucker) is not None:
            w = torch.einsum("ijkl,jr,ip->prkl", _f64(tensors[tucker]), _f64(tensors[b]), _f64(tensors[a]))
            return float(torch.linalg.vector_norm(w))
        return math.sqrt(lowrank_sq_norm(tensors[a], tensors[b]))

    return abs(scale) * factor("w1", "w1_a", "w1_b") * factor("w2", "w2_a", "w2_b", "t2")


def loha_norm(tensors: dict[str, torch.Tensor | None], scale: float = 1.0) -> float:
    def product(a: str, b: str, tucker: str) -> torch.Tensor:
        if tensors.get(tucker) is not None:
            return torch.einsum("ijkl,jr,ip->prkl", _f64(tensors[tucker]), _f64(tensors[b]), _f64(tensors[a]))
        return _f64(tensors[a]) @ _f64(tensors[b]).flatten(start_dim=1)

    w = product("w1a", "w1b", "t1") * product("w2a", "w2b", "t2")
    return abs(scale) * float(torch.linalg.vector_norm(w))


def delta_norm(factors: Factors) -> float | None:
    """‖ΔW‖_F of one patch at strength 1, or None when this kind is not measured."""
    t = factors.tensors
    if factors.kind == "lora":
        return lora_norm(t["up"], t["down"], factors.scale, t.get("mid"))
    if factors.kind == "lokr":
        return lokr_norm(t, factors.scale)
    if factors.kind == "loha":
        return loha_norm(t, factors.scale)
    if factors.kind == "diff":
        return abs(factors.scale) * float(torch.linalg.vector_norm(_f64(t["diff"])))
    return None


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


def adapter_norm(adapter) -> tuple[str, float | None, bool]:
    """(kind, ‖ΔW‖ at strength 1 or None when not measured, DoRA?) of one `loader.adapters` adapter.

    Adapters whose change depends on the base weight (GLoRA, IA³, OFT, BOFT) are not measured here.
    """
    dora = bool(getattr(adapter, "is_dora", not getattr(adapter, "linear", True)))
    kind = getattr(adapter, "kind", type(adapter).__name__.lower())
    scale = getattr(adapter, "scale", 1.0)
    if kind == "lora":
        return ("dora" if dora else "lora"), lora_norm(adapter.up, adapter.down, scale, adapter.mid), dora
    if kind == "loha":
        tensors = {name: getattr(adapter, name) for name in ("w1a", "w1b", "w2a", "w2b", "t1", "t2")}
        return kind, loha_norm(tensors, scale), dora
    if kind == "lokr":
        names = {"w1": "w1", "w1_a": "w1a", "w1_b": "w1b", "w2": "w2", "w2_a": "w2a", "w2_b": "w2b", "t2": "t2"}
        return kind, lokr_norm({ours: getattr(adapter, theirs) for ours, theirs in names.items()}, scale), dora
    if kind == "full":
        return kind, float(torch.linalg.vector_norm(_f64(adapter.diff))), dora
    return kind, None, dora
