"""Real LoRA files, made at test time by the producer libraries on models shaped like the host's miniatures.

The diffusers UNet and transformers CLIP text model below have exactly the shapes of `hosting.SD15_UNET`
and `hosting.TINY_CLIP_TEXT`, so a LoRA trained (here: randomised) on them loads onto the host's
miniature SD1 model. `peft_*` writes diffusers/PEFT files through diffusers' own `save_lora_weights`;
`kohya_*` converts them with diffusers' own `convert_state_dict_to_kohya`. The producer's own weight change
(`reference_deltas`) is read from PEFT's merge: merged weight minus base weight, per diffusers module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "time_emb_proj"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def diffusers_sd15_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
    ).eval()


def transformers_clip_text(seed: int = 1):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=12,
                            max_position_embeddings=77, vocab_size=49408, projection_dim=64, hidden_act="quick_gelu")
    return CLIPTextModel(config).eval()


@dataclass
class Trained:
    """A model with a randomised ("trained") PEFT LoRA attached."""

    model: torch.nn.Module
    rank: int
    alpha: float
    use_dora: bool
    config: object = None


def attach_lora(model, targets, rank=4, alpha=8.0, seed=0, use_dora=False, init_scale=0.1, **config_options) -> Trained:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, use_dora=use_dora, init_lora_weights=True,
                        **config_options)
    model = inject_adapter_in_model(config, model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * init_scale)
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.2 * torch.rand(param.shape, generator=generator))
    return Trained(model, rank, alpha, use_dora, config)


def peft_state_dict(trained: Trained) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(trained.model).items()}


def adapter_metadata(trained: Trained) -> dict:
    """The LoraConfig diffusers stores in the file's metadata (as its training scripts pass it)."""
    if trained.config is not None:
        config = trained.config.to_dict()
        return {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    return {"r": trained.rank, "lora_alpha": trained.alpha, "use_dora": trained.use_dora}


def save_peft_sd15(path: str, unet: Trained | None, text: Trained | None) -> str:
    """A diffusers/PEFT SD1 LoRA file (unet. / text_encoder. keys, alpha in lora_adapter_metadata)."""
    from diffusers import StableDiffusionPipeline

    folder, name = os.path.split(path)
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=peft_state_dict(unet) if unet else None,
        text_encoder_lora_layers=peft_state_dict(text) if text else None,
        weight_name=name,
        unet_lora_adapter_metadata=adapter_metadata(unet) if unet else None,
        text_encoder_lora_adapter_metadata=adapter_metadata(text) if text else None,
    )
    return path


def save_kohya_sd15(path: str, unet: Trained | None, text: Trained | None) -> str:
    """A kohya SD1 LoRA file (lora_unet_ / lora_te_ keys with .alpha), via diffusers' own converter."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    state = {}
    if unet:
        state.update({f"unet.{k}": v for k, v in peft_state_dict(unet).items()})
    if text:
        state.update({f"text_encoder.{k}": v for k, v in peft_state_dict(text).items()})
    kohya = convert_state_dict_to_kohya(state)
    # The converter writes alpha = rank (scale 1); a kohya file keeps the trained alpha, as sd-scripts does.
    alpha = (unet or text).alpha
    kohya = {k: (torch.tensor(alpha, dtype=torch.float32) if k.endswith(".alpha") else v.contiguous())
             for k, v in kohya.items()}
    save_file(kohya, path)
    return path


def reference_deltas(trained: Trained, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """The producer's own change per module weight (and bias): PEFT's merged weight minus the base weight.

    The merge runs in float64 (cast and back; fp32 values survive exactly) so that W + ΔW − W keeps ΔW's digits.
    """
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, module in trained.model.named_modules():
        if isinstance(module, LoraLayer):
            module.double()
            try:
                layer = module.get_base_layer()
                base = layer.weight.detach().clone()
                base_bias = layer.bias.detach().clone() if layer.bias is not None else None
                module.scale_layer(scale) if scale != 1.0 else None
                module.merge(adapter_names=["default"])
                deltas[name + ".weight"] = (layer.weight.detach() - base).to(torch.float32)
                if base_bias is not None and not torch.equal(layer.bias.detach(), base_bias):
                    deltas[name + ".bias"] = (layer.bias.detach() - base_bias).to(torch.float32)
                module.unmerge()
                if scale != 1.0:
                    module.unscale_layer(scale)
            finally:
                module.float()
    return deltas


def diffusers_flux(seed: int = 0):
    """diffusers' Flux transformer with the shapes of hosting.FLUX_DIT (hidden 64, 2 double / 3 single blocks)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=3,
                                  attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                                  pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6)).eval()


def diffusers_sd3(seed: int = 0):
    """diffusers' SD3 transformer with the shapes of hosting.SD3_DIT (2 joint blocks, 128 wide, attn2 in block 0)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64,
                                 num_attention_heads=2, joint_attention_dim=64, caption_projection_dim=128,
                                 pooled_projection_dim=64, out_channels=16, pos_embed_max_size=8,
                                 dual_attention_layers=(0,)).eval()


def transformers_clip_g(seed: int = 2):
    """SDXL's second text encoder (CLIPTextModelWithProjection) shaped like hosting.TINY_CLIP_G_TEXT."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=80, intermediate_size=160, num_attention_heads=4, num_hidden_layers=4,
                            max_position_embeddings=77, vocab_size=49408, projection_dim=80, hidden_act="gelu")
    return CLIPTextModelWithProjection(config).eval()


def transformers_t5(seed: int = 3):
    """A T5 encoder shaped like hosting.TINY_T5 (the names of T5-XXL: encoder.block.N.layer.0.SelfAttention.q)."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=32128,
                      feed_forward_proj="gated-gelu")
    return T5EncoderModel(config).eval()


def save_peft(path: str, pipeline: str, **components: Trained) -> str:
    """A diffusers/PEFT file written by `<pipeline>.save_lora_weights` (components: unet, text_encoder, …)."""
    import diffusers

    folder, name = os.path.split(path)
    kwargs = {}
    for component, trained in components.items():
        kwargs[f"{component}_lora_layers"] = peft_state_dict(trained)
        kwargs[f"{component}_lora_adapter_metadata"] = adapter_metadata(trained)
    getattr(diffusers, pipeline).save_lora_weights(folder, weight_name=name, **kwargs)
    return path


# --- LyCORIS (lycoris-lora): every algorithm, through create_lycoris and through its kohya wrapper -----------

LYCORIS_VARIANTS: dict[str, dict] = {
    "locon": {"algo": "lora", "conv_dim": 4, "conv_alpha": 2},
    "locon_tucker": {"algo": "lora", "conv_dim": 4, "conv_alpha": 2, "use_tucker": True},
    "dora_out": {"algo": "lora", "conv_dim": 4, "conv_alpha": 2, "dora_wd": True},
    "dora_in": {"algo": "lora", "conv_dim": 4, "conv_alpha": 2, "dora_wd": True, "wd_on_output": False},
    "loha": {"algo": "loha", "conv_dim": 2, "conv_alpha": 1},
    "loha_tucker": {"algo": "loha", "conv_dim": 2, "conv_alpha": 1, "use_tucker": True},
    "loha_dora": {"algo": "loha", "conv_dim": 2, "conv_alpha": 1, "dora_wd": True},
    "lokr": {"algo": "lokr", "factor": 4, "conv_dim": 2, "conv_alpha": 1},
    "lokr_both": {"algo": "lokr", "factor": 4, "decompose_both": True, "conv_dim": 2, "conv_alpha": 1},
    "lokr_full": {"algo": "lokr", "factor": 4, "full_matrix": True},
    "lokr_tucker": {"algo": "lokr", "factor": 4, "conv_dim": 2, "conv_alpha": 1, "use_tucker": True},
    "ia3": {"algo": "ia3"},
    "ia3_input": {"algo": "ia3", "train_on_input": True},
    "glora": {"algo": "glora", "conv_dim": 2, "conv_alpha": 1},
    "glora_tucker": {"algo": "glora", "conv_dim": 2, "conv_alpha": 1, "use_tucker": True},
    "full": {"algo": "full"},
    "diag_oft": {"algo": "diag-oft", "constraint": 1e-3, "linear_dim": 8},
    "diag_oft_rescaled": {"algo": "diag-oft", "rescaled": True, "linear_dim": 8},
    "boft": {"algo": "boft", "linear_dim": 8},
    "boft_rescaled": {"algo": "boft", "rescaled": True, "constraint": 1e-3, "linear_dim": 8},
    "norms": {"algo": "lora", "train_norm": True},
}


def randomise_lycoris_(network, seed: int = 0, scale: float = 0.1) -> None:
    # LoHa multiplies four factors: larger draws keep its change well above fp32 rounding of W + ΔW.
    if any(type(m).__name__ == "LohaModule" for m in lycoris_modules(network)):
        scale = 0.4
    """"Train" a LyCORIS network: every adapter parameter drawn from a seeded generator, magnitudes kept positive."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in network.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("dora_scale"):
                param.mul_(1 + 0.2 * noise.abs())
            elif name.endswith("rescale"):
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(noise * scale)


def lycoris_modules(network) -> list:
    return list(getattr(network, "loras", None) or [*network.text_encoder_loras, *network.unet_loras])


def lycoris_deltas(network, model_names: dict[int, str], multiplier: float = 1.0, models=()) -> dict[str, torch.Tensor]:
    """The producer's own change per base parameter, captured from each LyCORIS module's forward pass.

    Every LyCORIS module computes `new_weight − base_weight` and hands it to its op (F.linear / F.conv2d);
    capturing that argument gives exactly the weight change the producer applies at `multiplier`. Norm modules
    apply through the norm layer instead, so theirs comes from get_merged_weight. `model_names` maps id(module)
    of the base layers to their parameter path (without `.weight`). The capture runs in float64 (`models` are
    the base models; only the adapted layers are cast, and back: fp32 values survive that exactly): the producer
    forms (W + ΔW) − W, which in fp32 would bury small changes in rounding.
    """
    return _lycoris_deltas(network, model_names, multiplier)


def _lycoris_deltas(network, model_names, multiplier):
    deltas: dict[str, torch.Tensor] = {}
    for lyco in lycoris_modules(network):
        base = lyco.org_module[0]
        name = model_names[id(base)]
        kind = type(lyco).__name__
        lyco.multiplier = multiplier
        if kind == "NormModule":
            weight, bias = lyco.get_merged_weight(multiplier)
            deltas[name + ".weight"] = (weight - base.weight).detach().float()
            if bias is not None:
                deltas[name + ".bias"] = (bias - base.bias).detach().float()
            continue
        dtype = torch.float64
        if kind in ("DiagOFTModule", "ButterflyOFTModule"):  # LyCORIS' Cayley transform is fp32 only
            dtype = torch.float32
        lyco.to(dtype), base.to(dtype)
        _cast_cached_weights(lyco, dtype)
        captured = {}

        def capture(x, weight=None, bias=None, *args, _captured=captured, **kwargs):
            _captured["weight"], _captured["bias"] = weight, bias
            return torch.zeros(())

        original_op = lyco.op
        lyco.op = capture
        try:
            with torch.no_grad():
                lyco.forward(_probe_input(base, dtype))
        finally:
            lyco.op = original_op
            lyco.multiplier = 1.0
            lyco.float(), base.float()
            _cast_cached_weights(lyco, torch.float32)
        weight, bias = captured["weight"], captured["bias"]
        if kind == "FullModule" and not lyco.is_diff:  # the module *is* the layer: its op gets the whole weight
            weight = weight - lyco.org_weight.to(weight)
            org_bias = lyco._org_bias_tensor(dtype=weight.dtype)
            bias = None if bias is None or org_bias is None else bias - org_bias
        deltas[name + ".weight"] = weight.detach().float().reshape(lyco.org_weight.shape)
        if bias is not None:
            deltas[name + ".bias"] = bias.detach().float()
    return deltas


def _cast_cached_weights(lyco, dtype) -> None:
    """LyCORIS `full` keeps the original weight and bias outside its parameters; cast those too."""
    if type(lyco).__name__ != "FullModule":
        return
    lyco._org_weight[0] = lyco._org_weight[0].to(dtype)
    if lyco.org_bias:
        lyco.org_bias[0] = lyco.org_bias[0].to(dtype)


def _probe_input(layer, dtype) -> torch.Tensor:
    if isinstance(layer, torch.nn.Conv2d):
        return torch.zeros(1, layer.in_channels, 8, 8, dtype=dtype)
    if isinstance(layer, torch.nn.Linear):
        return torch.zeros(1, layer.in_features, dtype=dtype)
    raise TypeError(f"no probe input for {type(layer).__name__}")


def module_names(*models) -> dict[int, str]:
    names = {}
    for prefix, model in models:
        for name, module in model.named_modules():
            names[id(module)] = prefix + name
    return names


def lycoris_preset(path: str, names=(), modules=(), text_modules=(), kohya: bool = False) -> str:
    """A LyCORIS preset file (its presets are TOML) adapting exactly the named layers / module classes.

    create_lycoris reads `target_*` keys; the kohya wrapper reads `unet_target_*` and `text_encoder_target_*`.
    """
    def toml_list(items):
        return "[" + ", ".join(f'"{i}"' for i in items) + "]"

    prefix = "unet_" if kohya else ""
    lines = ["enable_conv = true", f"{prefix}target_module = {toml_list(modules)}",
             f"{prefix}target_name = {toml_list(names)}"]
    if kohya:
        lines += [f"text_encoder_target_module = {toml_list(text_modules)}", "text_encoder_target_name = []"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def make_lycoris(model, variant: str, seed: int = 0, preset: str = "full"):
    """create_lycoris (module names `lycoris_<path>`) on `model`, randomised."""
    from lycoris import create_lycoris

    options = dict(LYCORIS_VARIANTS[variant])
    dim = options.pop("linear_dim", 4)
    network = create_lycoris(model, 1.0, linear_dim=dim, linear_alpha=2, preset=preset, **options)
    network.apply_to()
    randomise_lycoris_(network, seed)
    return network


def make_lycoris_kohya(text_encoder, unet, variant: str, seed: int = 0, preset: str = "full"):
    """lycoris.kohya.create_network (module names `lora_unet_…`, `lora_te[N]_…`), randomised."""
    from lycoris.kohya import create_network

    options = {k: str(v) for k, v in LYCORIS_VARIANTS[variant].items()}
    dim = int(options.pop("linear_dim", 4))
    network = create_network(1.0, dim, 2, None, text_encoder, unet, preset=preset, **options)
    network.apply_to(text_encoder, unet, text_encoder is not None, True)
    randomise_lycoris_(network, seed)
    return network


def copy_weights_(model: torch.nn.Module, source: dict[str, torch.Tensor], names: dict[str, str]) -> torch.nn.Module:
    """Give a producer's model the host miniature's weights (names: producer key -> host key), so that
    adapters whose change depends on the base weight (DoRA, IA³, GLoRA, OFT) see the same W on both sides."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, host_key in names.items():
            if key in params and host_key in source and params[key].shape == source[host_key].shape:
                params[key].copy_(source[host_key])
    return model


# --- kohya sd-scripts Flux files (sd-scripts is no package: written after its code, kohya-ss/sd-scripts) -------

def sd_scripts_flux_lora(flux_dit: torch.nn.Module, rank: int, alpha: float, seed: int, split_qkv: bool):
    """What sd-scripts' `networks.lora_flux` saves for the Flux model `flux_dit`, and the trained parts.

    As its LoRANetwork does: one LoRA per Linear inside every DoubleStreamBlock / SingleStreamBlock, named
    `lora_unet_` + the module path with `_` for `.`. With split_qkv each q/k/v part of `*_attn.qkv` (and the
    q/k/v/mlp parts of `linear1`) is its own rank-r LoRA; `state_dict()` saves them fused: the downs stacked
    (`torch.cat(dim=0)`), the ups placed block-diagonally in zeros of (sum of parts, r · parts), alpha unchanged.
    sd-scripts hardcodes the parts as 3072 rows (12288 for the mlp); here they are the miniature's widths.
    Metadata as train_network.py writes it: ss_network_module/dim/alpha, and `ss_network_args` as the JSON of
    the `key=value` strings given (split_qkv=True). Returns (tensors, metadata, {name: (module path, [(down, up)])}).
    """
    import json

    generator = torch.Generator().manual_seed(seed)
    tensors, trained = {}, {}
    for block_name, block in flux_dit.named_modules():
        if type(block).__name__ not in ("DoubleStreamBlock", "SingleStreamBlock"):
            continue
        hidden = block.hidden_size
        for child_name, child in block.named_modules():
            if type(child).__name__ != "Linear":
                continue
            path = f"{block_name}.{child_name}"
            name = "lora_unet_" + path.replace(".", "_")
            splits = [child.out_features]
            if split_qkv and "double" in name and "qkv" in name:
                splits = [hidden] * 3
            elif split_qkv and "single" in name and "linear1" in name:
                splits = [hidden] * 3 + [child.out_features - 3 * hidden]
            parts = [(torch.randn(rank, child.in_features, generator=generator) * 0.1,
                      torch.randn(rows, rank, generator=generator) * 0.1) for rows in splits]
            down = torch.cat([d for d, _ in parts], dim=0)
            up = torch.zeros(sum(splits), rank * len(parts))
            start = 0
            for j, (_, part_up) in enumerate(parts):
                up[start:start + part_up.shape[0], j * rank:(j + 1) * rank] = part_up
                start += part_up.shape[0]
            tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"] = down, up
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
            trained[name] = (path, parts)
    metadata = {"ss_network_module": "networks.lora_flux", "ss_network_dim": str(rank),
                "ss_network_alpha": str(float(alpha))}
    if split_qkv:
        metadata["ss_network_args"] = json.dumps({"split_qkv": "True"})
    return tensors, metadata, trained


def sd_scripts_training_delta(parts: list[tuple[torch.Tensor, torch.Tensor]], rank: int, alpha: float,
                              multiplier: float) -> torch.Tensor:
    """The weight change of lora_flux's LoRAModule.forward during training: its output minus the original's,
    `cat([up_i(down_i(x))], dim=-1) · multiplier · alpha / rank`, read off on the identity input."""
    eye = torch.eye(parts[0][0].shape[1], dtype=torch.float64)
    outputs = [torch.nn.functional.linear(torch.nn.functional.linear(eye, d.double()), u.double()) for d, u in parts]
    return (torch.cat(outputs, dim=-1) * multiplier * (alpha / rank)).T.float()


# The ai-toolkit (diffusers) modules that sd-scripts' convert_flux_lora.py joins into each sd-scripts module.
_AIT_DOUBLE = {"img_attn_proj": ["attn.to_out.0"], "img_attn_qkv": ["attn.to_q", "attn.to_k", "attn.to_v"],
               "img_mlp_0": ["ff.net.0.proj"], "img_mlp_2": ["ff.net.2"], "img_mod_lin": ["norm1.linear"],
               "txt_attn_proj": ["attn.to_add_out"],
               "txt_attn_qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
               "txt_mlp_0": ["ff_context.net.0.proj"], "txt_mlp_2": ["ff_context.net.2"],
               "txt_mod_lin": ["norm1_context.linear"]}
_AIT_SINGLE = {"linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], "linear2": ["proj_out"],
               "modulation_lin": ["norm.linear"]}


def sd_scripts_from_ai_toolkit(ait: dict[str, torch.Tensor], double_blocks: int, single_blocks: int):
    """sd-scripts' `convert_flux_lora.py --src ai-toolkit --dst sd-scripts` (convert_ai_toolkit_to_sd_scripts).

    A module from one ai-toolkit module: lora_A → lora_down, lora_B → lora_up, alpha = its rank. A module from
    several (q/k/v, linear1's q/k/v/mlp): the downs concatenated, the ups block-diagonal in zeros, and alpha set
    to the new rank (rank · parts), so that the usual alpha / rank reading gives each part its scale 1. What is
    left unconverted is dropped (the converter only warns). Returns (sd-scripts tensors, ai-toolkit keys used).
    """
    out, used = {}, []
    blocks = [(f"lora_unet_double_blocks_{i}_", f"transformer.transformer_blocks.{i}.", _AIT_DOUBLE)
              for i in range(double_blocks)]
    blocks += [(f"lora_unet_single_blocks_{i}_", f"transformer.single_transformer_blocks.{i}.", _AIT_SINGLE)
               for i in range(single_blocks)]
    for sds_prefix, ait_prefix, table in blocks:
        for sds_name, ait_names in table.items():
            downs = [ait.get(f"{ait_prefix}{n}.lora_A.weight") for n in ait_names]
            if downs[0] is None:
                continue
            ups = [ait[f"{ait_prefix}{n}.lora_B.weight"] for n in ait_names]
            used += [f"{ait_prefix}{n}" for n in ait_names]
            rank = downs[0].shape[0]
            up = torch.zeros(sum(u.shape[0] for u in ups), rank * len(ups), dtype=ups[0].dtype)
            start = 0
            for j, part in enumerate(ups):
                up[start:start + part.shape[0], j * rank:(j + 1) * rank] = part
                start += part.shape[0]
            key = sds_prefix + sds_name
            out[f"{key}.lora_down.weight"] = torch.cat(downs, dim=0).contiguous()
            out[f"{key}.lora_up.weight"] = up if len(ups) > 1 else ups[0].contiguous()
            out[f"{key}.alpha"] = torch.scalar_tensor(rank * len(ups), dtype=downs[0].dtype)
    return out, used


# --- LyCORIS GLoRA before its 2024 rewrite (lycoris/modules/glora.py up to KohakuBlueleaf/LyCORIS c2976d2) -------

def old_lycoris_glora(layers: dict[str, torch.nn.Module], ranks: dict[str, int], alpha: float, seed: int):
    """A GLoRA file as LyCORIS 1.8–2.x saved it through its kohya wrapper (`lora_unet_<path>`), and its math.

    Its GLoRAModule held a1 = Linear(in, r), a2 = Linear(r, in), b1 = Linear(in, r), b2 = Linear(r, out) (1×1
    convs for conv layers; larger kernels were refused), so the file's weights are a1 [r, in], a2 [in, r],
    b1 [r, in], b2 [out, r] and alpha. Its merge_to adds make_weight() · alpha / r · multiplier with
    make_weight() = b2 @ b1 + W @ a2 @ a1 (each flattened to 2-D). Returns (tensors, {layer path: merge(s)})."""
    generator = torch.Generator().manual_seed(seed)
    tensors, merges = {}, {}
    for path, layer in layers.items():
        rank = ranks[path]
        out_dim, in_dim = layer.weight.shape[:2]
        kernel = (1, 1) if layer.weight.dim() == 4 else ()
        shapes = {"a1": (rank, in_dim), "a2": (in_dim, rank), "b1": (rank, in_dim), "b2": (out_dim, rank)}
        factors = {role: torch.randn(shape, generator=generator) * 0.1 for role, shape in shapes.items()}
        name = "lora_unet_" + path.replace(".", "_")
        for role, factor in factors.items():
            tensors[f"{name}.{role}.weight"] = factor.reshape(*factor.shape, *kernel).contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
        weight = layer.weight.detach().to(torch.float64)

        def merge(multiplier, f=factors, w=weight, r=rank):
            a1, a2, b1, b2 = (f[k].double() for k in ("a1", "a2", "b1", "b2"))
            made = b2 @ b1 + (w.reshape(w.shape[0], -1) @ a2) @ a1
            return (made * (alpha / r) * multiplier).reshape(w.shape).float()

        merges[path] = merge
    return tensors, merges
