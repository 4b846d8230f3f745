"""Synthetic model key sets with the real block structure of each architecture (no host needed)."""

from __future__ import annotations

CLIP_LAYER = "transformer.text_model.encoder.layers.0.mlp.fc1.weight"


def clip_keys(*names: str) -> list[str]:
    return [f"{n}.{CLIP_LAYER}" for n in names]


def _attn(prefix: str) -> list[str]:
    t = f"{prefix}.transformer_blocks.0"
    return [f"{prefix}.proj_in.weight", f"{t}.attn1.to_q.weight", f"{t}.attn2.to_k.weight",
            f"{t}.ff.net.0.proj.weight", f"{t}.ff.net.2.weight", f"{prefix}.proj_out.weight"]


def _unet(n_in: int, attn_in: set[int], attn_out: set[int]) -> list[str]:
    d = "diffusion_model"
    keys = [f"{d}.time_embed.0.weight", f"{d}.input_blocks.0.0.weight"]
    for i in range(1, n_in):
        keys.append(f"{d}.input_blocks.{i}.0.in_layers.2.weight")
        if i in attn_in:
            keys += _attn(f"{d}.input_blocks.{i}.1")
    keys += [f"{d}.middle_block.0.in_layers.2.weight", *_attn(f"{d}.middle_block.1"),
             f"{d}.middle_block.2.in_layers.2.weight"]
    for i in range(n_in):
        keys.append(f"{d}.output_blocks.{i}.0.in_layers.2.weight")
        if i in attn_out:
            keys += _attn(f"{d}.output_blocks.{i}.1")
    keys += [f"{d}.out.2.weight"]
    return keys


def sd1() -> list[str]:
    return _unet(12, {1, 2, 4, 5, 7, 8}, set(range(3, 12)))


def sdxl() -> list[str]:
    return ["diffusion_model.label_emb.0.0.weight", *_unet(9, {4, 5, 7, 8}, set(range(6)))]


def flux(double: int = 19, single: int = 38, hidden: int = 8, mlp: int = 32) -> dict[str, tuple[int, ...]]:
    d = "diffusion_model"
    shapes: dict[str, tuple[int, ...]] = {
        f"{d}.img_in.weight": (hidden, 4), f"{d}.time_in.in_layer.weight": (hidden, 4),
        f"{d}.txt_in.weight": (hidden, 4)}
    for i in range(double):
        for stream in ("img", "txt"):
            shapes[f"{d}.double_blocks.{i}.{stream}_attn.qkv.weight"] = (3 * hidden, hidden)
            shapes[f"{d}.double_blocks.{i}.{stream}_attn.proj.weight"] = (hidden, hidden)
            shapes[f"{d}.double_blocks.{i}.{stream}_mlp.0.weight"] = (mlp, hidden)
            shapes[f"{d}.double_blocks.{i}.{stream}_mlp.2.weight"] = (hidden, mlp)
            shapes[f"{d}.double_blocks.{i}.{stream}_mod.lin.weight"] = (6 * hidden, hidden)
    for i in range(single):
        shapes[f"{d}.single_blocks.{i}.linear1.weight"] = (3 * hidden + mlp, hidden)
        shapes[f"{d}.single_blocks.{i}.linear2.weight"] = (hidden, hidden + mlp)
        shapes[f"{d}.single_blocks.{i}.modulation.lin.weight"] = (3 * hidden, hidden)
    shapes[f"{d}.final_layer.linear.weight"] = (16, hidden)
    return shapes


def chains(name: str, count: int, parts=("self_attn.q", "cross_attn.k", "ffn.0")) -> list[str]:
    d = "diffusion_model"
    keys = [f"{d}.patch_embedding.weight"]
    keys += [f"{d}.{name}.{i}.{p}.weight" for i in range(count) for p in parts]
    return [*keys, f"{d}.head.head.weight"]
