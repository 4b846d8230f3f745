"""Modules on a fused q/k/v projection (`to_qkv`, `to_added_qkv`) and modules on one part of a fused weight.

Producers: diffusers' own `fuse_qkv_projections()` on its Flux transformer, then PEFT (LoRA) or LyCORIS (LoKr, the
SimpleTuner `lycoris_…` names) on the fused layers; Qwen-Image, which diffusers does not fuse, gets the fused layers
diffusers' `fuse_projections` would make (the rows of to_q, to_k, to_v stacked in that order) — the layout of
SimpleTuner's `fused_qkv_projections` files. The reference is the producer's change of each fused layer, its rows
handed to the parts where the host's own key map puts each part (Flux: slices of `img_attn.qkv`, `txt_attn.qkv`,
`linear1`; Qwen-Image: the separate `to_q`, `to_k`, `to_v` weights). ComfyUI core loads none of these modules.
LoKr on the unfused parts (row offsets into the host's fused weights) is checked against the producer and the host.
Tolerance: ‖ours − ref‖ / ‖ref‖ ≤ 1e-4 per weight (fp32 files), strengths 0.8 and −0.5.
"""

from __future__ import annotations

import comfy.utils
import miniatures
import producers
import pytest
import torch
from compare import changed, worst_relative_error
from test_formats_dit import host_apply

import nodes

TOLERANCE = 1e-4
STRENGTHS = (0.8, -0.5)
PARTS = {"to_qkv": ("to_q", "to_k", "to_v"), "to_added_qkv": ("add_q_proj", "add_k_proj", "add_v_proj")}


def apply(model, name, strength):
    model, _, report = nodes.NODE_CLASS_MAPPINGS["LoraDeckLoader"]().execute(
        model=model, lora_name=name, strength_model=strength).args[:3]
    return changed(model), report


def split_onto_parts(deltas: dict[str, torch.Tensor], part_target, host_state: dict, scale: float) -> dict:
    """Each fused layer's change cut into its parts' rows (diffusers' q, k, v order), each part's rows added where
    `part_target(part name)` says the host puts that part: a model key, or (key, (0, start, length))."""
    out: dict[str, torch.Tensor] = {}
    for name, delta in deltas.items():
        layer, _, fused = name.removesuffix(".weight").rpartition(".")
        first = 0
        for part in PARTS[fused]:
            target = part_target(f"{layer}.{part}")
            key = target if isinstance(target, str) else target[0]
            length = target[1][2] if isinstance(target, tuple) else host_state[key].shape[0]
            full = out.setdefault(key, torch.zeros(host_state[key].shape))
            rows = full.narrow(0, target[1][1], length) if isinstance(target, tuple) else full
            rows.add_(scale * delta[first:first + length])
            first += length
        assert first == delta.shape[0], name
    return out


def check(model, name, reference_at, host_loads_nothing=True):
    for strength in STRENGTHS:
        ours, report = apply(model, name, strength)
        assert worst_relative_error(ours, reference_at(strength)) <= TOLERANCE, (name, strength)
        assert "matched nothing" not in report and "do not fit" not in report, report
        if host_loads_nothing:
            assert "fused q/k/v modules (to_qkv, to_added_qkv) applied where the model keeps" in report
            host_model, _ = host_apply(model, None, str(LORAS[0] / name), strength)
            assert not changed(host_model), "the host now loads fused to_qkv modules: compare with it"


LORAS = []


@pytest.fixture(scope="module", autouse=True)
def _loras(pack, loras_dir):
    LORAS[:] = [loras_dir]


# --- Flux: the fused layers onto slices of the host's own fused weights -------------------------------------------


@pytest.fixture(scope="module")
def flux():
    return miniatures.build("Flux", seed=5)


@pytest.fixture(scope="module")
def flux_part_target(flux):
    names = comfy.utils.flux_to_diffusers(flux.model.model_config.unet_config, output_prefix="diffusion_model.")
    return lambda part: names[part + ".weight"]


def fused_flux(seed):
    model = producers.diffusers_flux(seed)
    model.fuse_qkv_projections()  # diffusers' own fusion: to_qkv (and to_added_qkv) beside the parts
    return model


def test_flux_peft_lora_on_diffusers_fused_qkv(loras_dir, flux, flux_part_target):
    trained = producers.attach_lora(fused_flux(0), ["to_qkv", "to_added_qkv"], rank=4, alpha=8, seed=81)
    producers.save_peft(str(loras_dir / "flux_fused_qkv.safetensors"), "FluxPipeline", transformer=trained)
    deltas = producers.reference_deltas(trained)
    assert any(k.startswith("single_transformer_blocks.") for k in deltas) and len(deltas) == 2 * 2 + 3
    state = flux.model.state_dict()
    check(flux, "flux_fused_qkv.safetensors", lambda s: split_onto_parts(deltas, flux_part_target, state, s))


def lycoris_on(model, names, tmp_path, variant, seed):
    preset = producers.lycoris_preset(str(tmp_path / f"{variant}.toml"), names=names)
    return producers.make_lycoris(model, variant, seed=seed, preset=preset)


def test_flux_lycoris_lokr_on_fused_qkv_simpletuner_names(loras_dir, flux, flux_part_target, tmp_path):
    model = fused_flux(1)
    fused = [n for n, _ in model.named_modules() if n.endswith((".to_qkv", ".to_added_qkv"))]
    network = lycoris_on(model, fused, tmp_path, "lokr", seed=82)
    network.save_weights(str(loras_dir / "flux_fused_lokr.safetensors"), torch.float32, {})
    deltas = producers.lycoris_deltas(network, producers.module_names(("", model)), 1.0)
    assert len(deltas) == len(fused) == 7
    state = flux.model.state_dict()
    check(flux, "flux_fused_lokr.safetensors", lambda s: split_onto_parts(deltas, flux_part_target, state, s))


def test_flux_lycoris_lokr_on_one_part_of_a_fused_weight_equals_producer_and_host(loras_dir, flux,
                                                                                  flux_part_target, tmp_path):
    """Row offsets: LoKr on to_q / add_k_proj / a single block's to_v lands on rows of the host's fused weights."""
    model = producers.diffusers_flux(2)
    parts = ["transformer_blocks.0.attn.to_q", "transformer_blocks.1.attn.add_k_proj",
             "single_transformer_blocks.2.attn.to_v", "single_transformer_blocks.0.proj_mlp"]
    network = lycoris_on(model, parts, tmp_path, "lokr", seed=83)
    network.save_weights(str(loras_dir / "flux_part_lokr.safetensors"), torch.float32, {})
    deltas = producers.lycoris_deltas(network, producers.module_names(("", model)), 1.0)
    state = flux.model.state_dict()

    def reference(strength):
        out = {}
        for name, delta in deltas.items():
            key, (dim, start, length) = flux_part_target(name.removesuffix(".weight"))
            out.setdefault(key, torch.zeros(state[key].shape)).narrow(dim, start, length).add_(strength * delta)
        return out

    for strength in STRENGTHS:
        ours, _ = apply(flux, "flux_part_lokr.safetensors", strength)
        assert worst_relative_error(ours, reference(strength)) <= TOLERANCE, strength
        host_model, _ = host_apply(flux, None, str(loras_dir / "flux_part_lokr.safetensors"), strength)
        assert worst_relative_error(changed(host_model), ours) <= TOLERANCE, (strength, "host")


# --- Qwen-Image: the fused layers onto the host's separate q, k, v weights ----------------------------------------


@pytest.fixture(scope="module")
def qwen():
    return miniatures.build("QwenImage", seed=5)


def fused_qwen(seed, host=None):
    """diffusers' Qwen-Image miniature with the fused layers fuse_projections would add (rows q, k, v in order);
    with `host`, carrying that host miniature's weights (the names are the same), for DoRA, whose change depends
    on the weight it is applied to."""
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    config = miniatures.QWEN_IMAGE
    model = QwenImageTransformer2DModel(
        patch_size=config["patch_size"], in_channels=config["in_channels"], out_channels=config["out_channels"],
        num_layers=config["num_layers"], attention_head_dim=config["attention_head_dim"],
        num_attention_heads=config["num_attention_heads"], joint_attention_dim=config["joint_attention_dim"],
        axes_dims_rope=config["axes_dims_rope"]).eval()
    if host is not None:
        state = {k.removeprefix("diffusion_model."): v for k, v in host.model.state_dict().items()}
        missing, _ = model.load_state_dict(state, strict=False)
        assert not [k for k in missing if ".attn." in k], missing
    with torch.no_grad():
        for block in model.transformer_blocks:
            for fused, parts in PARTS.items():
                layers = [getattr(block.attn, p) for p in parts]
                linear = torch.nn.Linear(layers[0].in_features, sum(la.out_features for la in layers))
                linear.weight.copy_(torch.cat([la.weight for la in layers]))
                linear.bias.copy_(torch.cat([la.bias for la in layers]))
                setattr(block.attn, fused, linear)
    return model


def qwen_part_target(part):
    return "diffusion_model." + part.removeprefix("transformer.") + ".weight"


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora-pack_convention"])
def test_qwen_peft_fused_qkv_onto_separate_weights(loras_dir, qwen, dora):
    """DoRA normalises per output row, so its rows split exactly; at s ≠ 1 the reference is s · ΔW(1), the pack's
    strength convention for DoRA (docs/formats.md)."""
    base = fused_qwen(3, host=qwen if dora else None)
    trained = producers.attach_lora(base, ["to_qkv", "to_added_qkv"], rank=4, alpha=8, seed=84, use_dora=dora)
    name = f"qwen_fused_qkv_{'dora' if dora else 'lora'}.safetensors"
    producers.save_peft(str(loras_dir / name), "QwenImagePipeline", transformer=trained)
    state = qwen.model.state_dict()
    if dora:
        deltas = producers.reference_deltas(trained)
        reference = lambda s: split_onto_parts(deltas, qwen_part_target, state, s)  # noqa: E731
    else:
        reference = lambda s: split_onto_parts(producers.reference_deltas(trained, s), qwen_part_target, state, 1.0)  # noqa: E731
    check(qwen, name, reference)


def test_qwen_lycoris_lokr_fused_qkv_onto_separate_weights(loras_dir, qwen, tmp_path):
    """The SimpleTuner LoKr layout of issue reports ("lora key not loaded" for every `…_attn_to_qkv`)."""
    model = fused_qwen(4)
    fused = [n for n, _ in model.named_modules() if n.endswith((".to_qkv", ".to_added_qkv"))]
    network = lycoris_on(model, fused, tmp_path, "lokr", seed=85)
    network.save_weights(str(loras_dir / "qwen_fused_lokr.safetensors"), torch.float32, {})
    deltas = producers.lycoris_deltas(network, producers.module_names(("", model)), 1.0)
    assert len(deltas) == 2 * miniatures.QWEN_IMAGE["num_layers"]
    state = qwen.model.state_dict()
    check(qwen, "qwen_fused_lokr.safetensors", lambda s: split_onto_parts(deltas, qwen_part_target, state, s))


def test_qwen_fused_oft_is_refused_by_name(loras_dir, qwen, tmp_path):
    """OFT rotates the whole fused weight: no rows of it belong to q alone. Skipped modules are named."""
    model = fused_qwen(5)
    network = lycoris_on(model, ["transformer_blocks.0.attn.to_qkv"], tmp_path, "diag_oft", seed=86)
    network.save_weights(str(loras_dir / "qwen_fused_oft.safetensors"), torch.float32, {})
    with pytest.raises(Exception, match="depends on the whole fused q/k/v weight"):
        apply(qwen, "qwen_fused_oft.safetensors", 0.8)
