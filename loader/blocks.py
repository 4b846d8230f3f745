"""Canonical block ids of a live model: which network block (or non-block group) each weight belongs to.

Blocks come from the model's own keys, never from the LoRA, so a LoRA that lacks some blocks never shifts
the meaning of a block-weight vector. Every weight lands in exactly one slot:

- text encoders: `BASE` when the model has one, else `TE1`, `TE2`, … (aliases `BASE`/`TE` = all of them,
  the encoder's own name such as `CLIP_L`, `T5XXL`, and A1111's Flux names `CLIP`, `T5`);
- UNets (SD1/SD2/SDXL…): `IN00…`, `M00`, `OUT00…` exactly as A1111 numbers the compvis blocks;
- transformers: one id per element of each top-level block chain (`D00…` double_blocks, `S00…`
  single_blocks, `J00…` SD3 joint_blocks, `B00…` Wan blocks / Qwen-Image transformer_blocks, `L00…` Lumina2
  layers, `NR0…`/`CR0…` refiners, found generically for any other `name.N.…` chain);
- the rest: `EMB` (embedders and everything before the last chain) and `FINAL` (the output head).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

BASE = "BASE"
EMB = "EMB"
FINAL = "FINAL"
DIFFUSION_PREFIX = "diffusion_model."

# Named chains of the host's transformers; any other `name.N.sub.param` chain gets initials.
CHAIN_PREFIXES = {
    "double_blocks": "D", "single_blocks": "S", "joint_blocks": "J",
    "double_stream_blocks": "D", "single_stream_blocks": "S",
    "double_layers": "D", "single_layers": "S",
    "blocks": "B", "transformer_blocks": "B", "layers": "L",
    "noise_refiner": "NR", "context_refiner": "CR",
}
_RESERVED = {"A", "B", "R", "U", "IN", "OUT", "M", "MID", "TE", "BASE", EMB, FINAL, "CLIP", "T5", "DEFAULT",
             "SEED"}

_UNET_PATTERNS = (
    (re.compile(r"^diffusion_model\.input_blocks\.(\d+)\."), "IN"),
    (re.compile(r"^diffusion_model\.middle_block\."), "M"),
    (re.compile(r"^diffusion_model\.output_blocks\.(\d+)\."), "OUT"),
)
_UNET_FINAL = re.compile(r"^diffusion_model\.out\.")


@dataclass(frozen=True)
class FusedPart:
    """A named row range [start, stop) of an output-concatenated weight (q/k/v of a qkv, mlp of linear1)."""

    name: str
    start: int
    stop: int


@dataclass(frozen=True)
class BlockMap:
    """Block ids of one model in network order, the slot of each weight, and how to name its parts.

    `family` says which legacy vector layouts apply: "sd1" (12 input blocks), "sdxl" (9), "unet" (other
    UNets), "double_single" (Flux, HunyuanVideo, Chroma…), "chains" (every other transformer).
    """

    architecture: str
    family: str
    ids: tuple[str, ...]
    text_encoders: tuple[str, ...]
    chains: dict[str, tuple[str, ...]]
    aliases: dict[str, tuple[str, ...]]
    _by_key: dict[str, str] = field(repr=False)
    _block_prefix: dict[str, str] = field(repr=False)
    _fused: dict[str, tuple[FusedPart, ...]] = field(repr=False)

    @classmethod
    def from_keys(cls, architecture: str, unet_keys: Iterable[str] | Mapping,
                  clip_keys: Iterable[str] | Mapping = ()) -> BlockMap:
        """Build the map from the keys of `model.model.state_dict()` and `clip.cond_stage_model.state_dict()`.

        Pass the state dicts themselves (or any mapping key -> tensor/shape) to let q/k/v and mlp row
        slices of fused weights be told apart; plain key lists give whole-weight resolution only.
        """
        shapes = _shapes_of(unet_keys)
        unet = [k for k in unet_keys if k.startswith(DIFFUSION_PREFIX)]
        clip = list(clip_keys)
        by_key: dict[str, str] = {}
        block_prefix: dict[str, str] = {}
        text_encoders, aliases = _text_encoders(clip, by_key)
        if any(k.startswith(DIFFUSION_PREFIX + "input_blocks.") for k in unet):
            family, chains, body = _unet_slots(unet, by_key, block_prefix)
        else:
            family, chains, body = _chain_slots(unet, by_key, block_prefix)
        aliases.update(_group_aliases(family, chains))
        fused = _fused_parts(unet, chains, block_prefix, by_key, shapes)
        ids = tuple(text_encoders) + tuple(body)
        return cls(architecture, family, ids, tuple(text_encoders), chains, aliases, by_key, block_prefix,
                   fused)

    def block_of(self, model_key: str) -> str | None:
        """The slot of a model weight (a block id, a text-encoder id, EMB or FINAL); None if not a weight."""
        return self._by_key.get(model_key)

    @property
    def blocks(self) -> tuple[str, ...]:
        """The network blocks (chain members) in order, without text encoders and non-block groups."""
        return tuple(b for chain in self.chains.values() for b in chain)

    def keys_of(self, block: str) -> list[str]:
        return [k for k, b in self._by_key.items() if b == block]

    def element_path(self, model_key: str) -> str:
        """The weight's module path inside its block, e.g. `1.transformer_blocks.0.attn2.to_k` in IN04."""
        prefix = self._block_prefix.get(model_key, "")
        path = model_key[len(prefix):] if prefix else model_key.removeprefix(DIFFUSION_PREFIX)
        return path.rsplit(".", 1)[0] if "." in path else path

    def fused_parts(self, model_key: str) -> tuple[FusedPart, ...]:
        """The named row ranges of a fused weight (empty when not fused or shapes are unknown)."""
        return self._fused.get(model_key, ())

    def parts_in(self, model_key: str, offset: tuple[int, int, int] | None) -> tuple[FusedPart, ...]:
        """The fused parts that a row slice (dim, start, length) of `model_key` overlaps."""
        parts = self._fused.get(model_key, ())
        if not parts:
            return ()
        if offset is None:
            return parts
        dim, start, length = offset
        if dim != 0:
            return ()
        return tuple(p for p in parts if p.start < start + length and start < p.stop)


def _shapes_of(keys: Iterable[str] | Mapping) -> dict[str, tuple[int, ...]]:
    if not isinstance(keys, Mapping):
        return {}
    shapes = {}
    for key, value in keys.items():
        shape = getattr(value, "shape", value)
        if isinstance(shape, (tuple, list)) or hasattr(shape, "__len__"):
            shapes[key] = tuple(int(d) for d in shape)
    return shapes


def _text_encoders(clip_keys: list[str], by_key: dict[str, str]):
    names: list[str] = []
    for key in clip_keys:
        name = key.split(".", 1)[0]
        if name not in names:
            names.append(name)
    ids = [BASE] if len(names) == 1 else [f"TE{i + 1}" for i in range(len(names))]
    id_of = dict(zip(names, ids, strict=False))
    for key in clip_keys:
        by_key[key] = id_of[key.split(".", 1)[0]]
    aliases: dict[str, tuple[str, ...]] = {}
    if ids:
        aliases["TE"] = tuple(ids)
        if len(ids) > 1:
            aliases[BASE] = tuple(ids)
        else:
            aliases["TE1"] = (BASE,)
    for name, te in id_of.items():
        alias = re.sub(r"[^A-Z0-9_]", "_", name.upper())
        if alias not in ids:
            aliases.setdefault(alias, (te,))
    clip = tuple(te for name, te in id_of.items() if name.startswith("clip"))
    t5 = tuple(te for name, te in id_of.items() if "t5" in name)
    if clip:
        aliases.setdefault("CLIP", clip)
    if t5:
        aliases.setdefault("T5", t5)
    return ids, aliases


def _unet_slots(keys: list[str], by_key: dict[str, str], block_prefix: dict[str, str]):
    chains: dict[str, list[tuple[int, str]]] = {"input_blocks": [], "middle_block": [], "output_blocks": []}
    saw_final = False
    for key in keys:
        for pattern, kind in _UNET_PATTERNS:
            match = pattern.match(key)
            if match:
                if kind == "M":
                    block, index, chain = "M00", 0, "middle_block"
                else:
                    index = int(match.group(1))
                    block, chain = f"{kind}{index:02d}", "input_blocks" if kind == "IN" else "output_blocks"
                by_key[key] = block
                block_prefix[key] = match.group(0)
                if (index, block) not in chains[chain]:
                    chains[chain].append((index, block))
                break
        else:
            if _UNET_FINAL.match(key):
                by_key[key], saw_final = FINAL, True
            else:
                by_key[key] = EMB
    ordered = {name: tuple(b for _, b in sorted(members)) for name, members in chains.items() if members}
    n_in = len(ordered.get("input_blocks", ()))
    family = {12: "sd1", 9: "sdxl"}.get(n_in, "unet")
    body = [EMB] if EMB in by_key.values() else []
    body += [b for chain in ordered.values() for b in chain]
    body += [FINAL] if saw_final else []
    return family, ordered, body


def _chain_slots(keys: list[str], by_key: dict[str, str], block_prefix: dict[str, str]):
    members: dict[str, set[int]] = {}
    first_seen: dict[str, int] = {}
    last_chain_position = -1
    for position, key in enumerate(keys):
        parts = key[len(DIFFUSION_PREFIX):].split(".")
        if len(parts) >= 4 and parts[1].isdigit():
            members.setdefault(parts[0], set()).add(int(parts[1]))
            first_seen.setdefault(parts[0], position)
            last_chain_position = position
    names = sorted(members, key=first_seen.get)
    prefixes = _chain_prefixes(names)
    chains: dict[str, tuple[str, ...]] = {}
    id_of: dict[tuple[str, int], str] = {}
    for name in names:
        indices = sorted(members[name])
        width = max(2 if len(prefixes[name]) == 1 else 1, len(str(indices[-1])))
        for i in indices:
            id_of[(name, i)] = f"{prefixes[name]}{i:0{width}d}"
        chains[name] = tuple(id_of[(name, i)] for i in indices)
    saw = {EMB: False, FINAL: False}
    for position, key in enumerate(keys):
        parts = key[len(DIFFUSION_PREFIX):].split(".")
        block = id_of.get((parts[0], int(parts[1]))) if len(parts) >= 4 and parts[1].isdigit() else None
        if block is not None:
            by_key[key] = block
            block_prefix[key] = f"{DIFFUSION_PREFIX}{parts[0]}.{parts[1]}."
        else:
            group = FINAL if position > last_chain_position and last_chain_position >= 0 else EMB
            by_key[key], saw[group] = group, True
    names_set = set(names)
    family = "double_single" if {"double_blocks", "single_blocks"} <= names_set else "chains"
    body = [EMB] if saw[EMB] else []
    body += [b for c in chains.values() for b in c]
    body += [FINAL] if saw[FINAL] else []
    return family, chains, body


def _chain_prefixes(names: list[str]) -> dict[str, str]:
    prefixes: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        prefix = CHAIN_PREFIXES.get(name) or "".join(w[0] for w in name.split("_") if w).upper() or "X"
        if prefix in used or (name not in CHAIN_PREFIXES and prefix in _RESERVED):
            prefix = re.sub(r"[^A-Z0-9]", "", name.upper())
        while prefix in used:
            prefix += "X"
        used.add(prefix)
        prefixes[name] = prefix
    return prefixes


def _group_aliases(family: str, chains: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    aliases: dict[str, tuple[str, ...]] = {}
    if family in ("sd1", "sdxl", "unet"):
        aliases["IN"] = chains.get("input_blocks", ())
        aliases["MID"] = chains.get("middle_block", ())
        aliases["OUT"] = chains.get("output_blocks", ())
    else:
        # A1111's Flux layout names the embedders IN and the final layer OUT.
        aliases["IN"] = (EMB,)
        aliases["OUT"] = (FINAL,)
    for name, ids in chains.items():
        if name in ("double_blocks", "double_stream_blocks", "double_layers"):
            aliases["DOUBLE"] = aliases.get("DOUBLE", ()) + ids
        elif name in ("single_blocks", "single_stream_blocks", "single_layers"):
            aliases["SINGLE"] = aliases.get("SINGLE", ()) + ids
    aliases["ALLBLOCKS"] = tuple(b for c in chains.values() for b in c)
    return aliases


def _fused_parts(keys: list[str], chains: dict[str, tuple[str, ...]], block_prefix: dict[str, str],
                 by_key: dict[str, str], shapes: dict[str, tuple[int, ...]]):
    """Row layouts of output-concatenated weights: any `*qkv.weight` (q, k, v thirds) and the single
    blocks' `linear1.weight` (q, k, v of the hidden size, then the mlp input)."""
    fused: dict[str, tuple[FusedPart, ...]] = {}
    if not shapes:
        return fused
    for key in keys:
        if key not in block_prefix or not key.endswith(".weight") or key not in shapes:
            continue
        rows = shapes[key][0] if shapes[key] else 0
        module = key[: -len(".weight")]
        if module.endswith("qkv") and rows % 3 == 0 and rows:
            third = rows // 3
            fused[key] = tuple(FusedPart(n, i * third, (i + 1) * third) for i, n in enumerate("qkv"))
        elif module.endswith(".linear1"):
            linear2 = module[: -len("linear1")] + "linear2.weight"
            hidden = shapes.get(linear2, (0,))[0]
            if hidden and rows > 3 * hidden:
                fused[key] = (FusedPart("q", 0, hidden), FusedPart("k", hidden, 2 * hidden),
                              FusedPart("v", 2 * hidden, 3 * hidden), FusedPart("mlp", 3 * hidden, rows))
    return fused


def same_kind(a: str, b: str) -> bool:
    """Two ids of one chain (same letters, different numbers)."""
    return a.rstrip("0123456789") == b.rstrip("0123456789")


def compress_ids(ids) -> str:
    """`IN00…IN11` style runs for a list of ids."""
    out: list[str] = []
    ids = list(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and _successor(ids[j], ids[j + 1]):
            j += 1
        out.append(ids[i] if j - i < 2 else f"{ids[i]}…{ids[j]}")
        if j - i == 1:
            out.append(ids[j])
        i = j + 1
    return ", ".join(out)


def _successor(a: str, b: str) -> bool:
    stem = a.rstrip("0123456789")
    if not stem or not same_kind(a, b) or a == stem or b == stem:
        return False
    return int(b[len(stem):]) == int(a[len(stem):]) + 1
