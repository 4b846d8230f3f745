"""Flux, SD3 and SDXL key styles on the host's miniature models, against the producers' own math.

Flux: diffusers/PEFT (`transformer.`, split q/k/v onto the host's fused qkv and linear1 rows), its
`base_model.model.` wrapper, OneTrainer (`lora_transformer_`), kohya (`lora_unet_double_blocks_…`, made by
lycoris.kohya on the host's own Flux classes), BFL/ComfyUI (`diffusion_model.`, lora_down/up + diff_b) and bare
native names (PEFT on the host's classes, with lora_B bias), and XLabs, hand-written after x-flux's
LoRALinearLayer (no producer is installable): `processor.qkv_lora1` = image stream, scale 1.
SD3: diffusers (`add_q_proj` → context qkv rows) and kohya `joint_blocks` (lycoris.kohya on the host's classes).
SDXL: te1/te2 from diffusers and from diffusers' kohya converter, and kohya's LDM UNet names.
Tolerance: ‖ours − ref‖ / ‖ref‖ ≤ 1e-4 per weight (fp32 files), strengths 0.8 and −0.5.
"""

from __future__ import annotations

import comfy.sd
import comfy.utils
import hosting
import producers
import pytest
import torch
from compare import changed, worst_relative_error
from peft import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

import nodes
from loader import inspect

TOLERANCE = 1e-4
STRENGTHS = (0.8, -0.5)
FLUX_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "norm1.linear",
                "norm1_context.linear", "proj_mlp", "proj_out", "norm.linear", "x_embedder", "context_embedder",
                "norm_out.linear", "linear_1", "linear_2"]
SD3_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
               "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "norm1.linear", "norm1_context.linear"]


def node(name):
    return nodes.NODE_CLASS_MAPPINGS[name]


def apply(model, clip, name, strength):
    return node("LoraDeckLoader").execute(model=model, lora_name=name, strength_model=strength, clip=clip,
                                          strength_clip=strength).args[:3]


def host_apply(model, clip, path, strength):
    return comfy.sd.load_lora_for_models(model, clip, comfy.utils.load_torch_file(path, safe_load=True),
                                         strength, strength)


def place(deltas: dict[str, torch.Tensor], names: dict, host_state: dict, scale: float = 1.0) -> dict:
    """Producer deltas (producer key -> change) as host weight changes, through the host's own name map:
    a tuple target `(key, (dim, start, length))` is a row slice of a fused weight, `(key, None, fn)` a transform."""
    out: dict[str, torch.Tensor] = {}
    for key, delta in deltas.items():
        target = names[key]
        host_key = target if isinstance(target, str) else target[0]
        full = out.setdefault(host_key, torch.zeros(host_state[host_key].shape))
        if isinstance(target, str):
            full += scale * delta
        elif target[1] is not None:
            full.narrow(*target[1]).add_(scale * delta)
        else:
            full += target[2](scale * delta)
    return out


def check(model, clip, name, reference_at, host_equal=None):
    """Apply `name` at each strength; equal the reference; optionally equal the host (host_equal(strength)
    gives the factor between the host's change and ours, 1 where the host is right)."""
    for strength in STRENGTHS:
        ours_model, ours_clip, report = apply(model, clip, name, strength)
        ours = {**changed(ours_model), **(changed(ours_clip.patcher) if ours_clip is not None else {})}
        assert worst_relative_error(ours, reference_at(strength)) <= TOLERANCE, (name, strength)
        assert "matched nothing" not in report, report
        if host_equal is not None:
            host_model, host_clip = host_apply(model, clip, str(LORAS_DIR[0] / name), strength)
            host = {**changed(host_model), **(changed(host_clip.patcher) if host_clip is not None else {})}
            factor = host_equal
            assert worst_relative_error({k: factor * v for k, v in host.items()}, ours) <= TOLERANCE, (name, "host")
    return report


LORAS_DIR = []  # the session's loras folder, for the host's own loading in check()


@pytest.fixture(scope="module", autouse=True)
def _loras(loras_dir):
    LORAS_DIR[:] = [loras_dir]


# --- Flux ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flux(pack):
    return hosting.mini_model("Flux", seed=5)


@pytest.fixture(scope="module")
def flux_names(flux):
    return comfy.utils.flux_to_diffusers(flux.model.model_config.unet_config, output_prefix="diffusion_model.")


@pytest.fixture(scope="module")
def flux_peft(loras_dir, flux, flux_names):
    """One trained diffusers Flux LoRA (rank 4, alpha 8) saved in the key styles of several trainers."""
    trained = producers.attach_lora(producers.diffusers_flux(), FLUX_TARGETS, rank=4, alpha=8, seed=80)
    deltas = producers.reference_deltas(trained)
    state = producers.peft_state_dict(trained)
    producers.save_peft(str(loras_dir / "flux_diffusers.safetensors"), "FluxPipeline", transformer=trained)
    diffusers_file = load_file(str(loras_dir / "flux_diffusers.safetensors"))
    assert any(k.startswith("transformer.single_transformer_blocks.0.attn.to_q.") for k in diffusers_file)
    metadata = {"lora_adapter_metadata": '{"transformer.r": 4, "transformer.lora_alpha": 8}'}
    save_file({k.replace("transformer.", "transformer.base_model.model.", 1): v for k, v in diffusers_file.items()},
              str(loras_dir / "flux_peft_wrapped.safetensors"), metadata)
    onetrainer = {}
    for key, tensor in state.items():
        module, _, suffix = key.rpartition(".lora_")
        name = "lora_transformer_" + module.replace(".", "_")
        onetrainer[f"{name}.lora_{'down' if suffix.startswith('A') else 'up'}.weight"] = tensor
        onetrainer[f"{name}.alpha"] = torch.tensor(8.0)
    save_file(onetrainer, str(loras_dir / "flux_onetrainer.safetensors"))
    host_state = flux.model.state_dict()
    return lambda s: place(deltas, flux_names, host_state, s)


def test_flux_diffusers_split_qkv_onto_fused_weights(flux, flux_peft):
    """The host maps these keys but ignores the PEFT alpha in the metadata: its change is exactly half of ours."""
    report = check(flux, None, "flux_diffusers.safetensors", flux_peft, host_equal=2.0)
    assert "modules applied with the lora_alpha from the file's PEFT metadata; ComfyUI core ignores it" in report


def flux_diffusers_like(host):
    """diffusers' Flux transformer carrying the host miniature's weights (fused rows split as the host maps them)."""
    model = producers.diffusers_flux()
    names = comfy.utils.flux_to_diffusers(host.model.model_config.unet_config, output_prefix="diffusion_model.")
    state = host.model.state_dict()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, target in names.items():
            if key not in params:
                continue
            if isinstance(target, str):
                params[key].copy_(state[target])
            elif target[1] is not None:
                params[key].copy_(state[target[0]].narrow(*target[1]))
            else:
                params[key].copy_(target[2](state[target[0]]))  # the scale/shift swap is its own inverse
    return model


def test_flux_peft_dora_on_fused_rows_pack_convention(loras_dir, flux, flux_names):
    """PEFT DoRA on diffusers' split q/k/v: each split's row norms are rows of the host's fused weight.
    Reference at s: s × PEFT's change at 1 (the pack's DoRA strength convention)."""
    trained = producers.attach_lora(flux_diffusers_like(flux), ["to_q", "to_k", "add_v_proj", "proj_mlp", "ff.net.2"],
                                    rank=4, alpha=8, seed=86, use_dora=True)
    producers.save_peft(str(loras_dir / "flux_peft_dora.safetensors"), "FluxPipeline", transformer=trained)
    deltas, state = producers.reference_deltas(trained), flux.model.state_dict()
    report = check(flux, None, "flux_peft_dora.safetensors", lambda s: place(deltas, flux_names, state, s))
    assert "lora+dora" in report


def test_flux_peft_wrapper_prefix(flux, flux_peft):
    report = check(flux, None, "flux_peft_wrapped.safetensors", flux_peft)
    assert "base flux" in report


def test_flux_onetrainer(flux, flux_peft):
    report = check(flux, None, "flux_onetrainer.safetensors", flux_peft, host_equal=1.0)
    assert "unlike ComfyUI core" not in report  # the same change with alpha tensors: the host agrees


@pytest.fixture(scope="module")
def flux_kohya(loras_dir, pack, tmp_path_factory):
    """lycoris.kohya on the host's own Flux classes: kohya's Flux names (`lora_unet_double_blocks_0_img_attn_qkv`)."""
    made = {}

    def make(variant):
        if variant not in made:
            producer = hosting.mini_model("Flux", seed=5).model.diffusion_model  # same weights as the `flux` fixture
            names = producers.module_names(("diffusion_model.", producer))
            preset = producers.lycoris_preset(str(tmp_path_factory.mktemp("p") / "flux.toml"), kohya=True,
                                              modules=["DoubleStreamBlock", "SingleStreamBlock"], names=["img_in"])
            network = producers.make_lycoris_kohya(None, producer, variant, seed=81, preset=preset)
            path = str(loras_dir / f"flux_kohya_{variant}.safetensors")
            network.save_weights(path, torch.float32, {"ss_base_model_version": "flux1"})
            dora = producers.LYCORIS_VARIANTS[variant].get("dora_wd")
            refs = {s: ({k: s * d for k, d in producers.lycoris_deltas(network, names, 1.0).items()} if dora
                        else producers.lycoris_deltas(network, names, s)) for s in STRENGTHS}
            made[variant] = (path, refs)
        return made[variant]

    return make


@pytest.mark.parametrize("variant", ["locon", "lokr", pytest.param("dora_out", id="dora_out-pack_convention")])
def test_flux_kohya(flux, flux_kohya, variant):
    path, refs = flux_kohya(variant)
    assert any(k.startswith("lora_unet_double_blocks_0_img_attn_qkv.") for k in load_file(path))
    assert any(k.startswith("lora_unet_single_blocks_2_linear1.") for k in load_file(path))
    check(flux, None, path.rsplit("/", 1)[-1], lambda s: refs[s], host_equal=1.0 if variant != "dora_out" else None)


@pytest.fixture(scope="module")
def flux_native(loras_dir, pack):
    """PEFT on the host's own Flux classes: bare native names (DiffSynth, musubi) with lora_B bias (BFL control),
    and the same as ComfyUI/BFL `diffusion_model.` files with lora_down/lora_up, alpha and diff_b."""
    producer = hosting.mini_model("Flux", seed=5).model.diffusion_model
    trained = producers.attach_lora(producer, ["qkv", "proj", "linear1", "linear2", "img_in"], rank=4, alpha=2,
                                    seed=82, lora_bias=True)
    with torch.no_grad():
        for name, param in trained.model.named_parameters():
            if name.endswith("lora_B.default.bias"):
                param.copy_(torch.randn(param.shape) * 0.05)
    deltas = producers.reference_deltas(trained)
    state = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(trained.model).items()}
    assert any(k.endswith("lora_B.bias") for k in state)
    metadata = {"lora_adapter_metadata": '{"r": 4, "lora_alpha": 2}'}
    save_file(state, str(loras_dir / "flux_native.safetensors"), metadata)
    comfy_style = {}
    for key, tensor in state.items():
        module, _, suffix = key.rpartition(".lora_")
        name = "diffusion_model." + module
        if suffix == "B.bias":
            comfy_style[f"{name}.diff_b"] = tensor * 0.5  # ComfyUI's diff_b is the bias change itself
        else:
            comfy_style[f"{name}.lora_{'down' if suffix.startswith('A') else 'up'}.weight"] = tensor
            comfy_style[f"{name}.alpha"] = torch.tensor(2.0)
    save_file(comfy_style, str(loras_dir / "flux_comfy.safetensors"))
    return lambda s: {"diffusion_model." + k: s * d for k, d in deltas.items()}


def test_flux_native_names_with_bias(flux, flux_native):
    report = check(flux, None, "flux_native.safetensors", flux_native)
    assert "native" in report


def test_flux_comfyui_names_with_diff_b(flux, flux_native):
    report = check(flux, None, "flux_comfy.safetensors", flux_native, host_equal=1.0)
    assert "comfyui" in report


@pytest.fixture(scope="module")
def flux_xlabs(loras_dir, flux):
    """XLabs x-flux files, hand-written after its LoRALinearLayer: up(down(x)), network_alpha None → scale 1.
    Double blocks: qkv_lora1/proj_lora1 on the image stream, qkv_lora2/proj_lora2 on the text stream;
    single blocks: qkv_lora on linear1's q/k/v rows, proj_lora over all of linear2."""
    g = torch.Generator().manual_seed(83)
    hidden, mlp, rank = 64, 256, 4
    tensors, host = {}, {}
    state = flux.model.state_dict()

    def lora(name, n_in, n_out, target, rows=None):
        down, up = torch.randn(rank, n_in, generator=g) * 0.1, torch.randn(n_out, rank, generator=g) * 0.1
        tensors[f"{name}.down.weight"], tensors[f"{name}.up.weight"] = down, up
        full = host.setdefault(target, torch.zeros(state[target].shape))
        full[rows or slice(None)] += up @ down

    for i in range(2):
        block = f"diffusion_model.double_blocks.{i}"
        lora(f"double_blocks.{i}.processor.qkv_lora1", hidden, 3 * hidden, f"{block}.img_attn.qkv.weight")
        lora(f"double_blocks.{i}.processor.proj_lora1", hidden, hidden, f"{block}.img_attn.proj.weight")
        lora(f"double_blocks.{i}.processor.qkv_lora2", hidden, 3 * hidden, f"{block}.txt_attn.qkv.weight")
        lora(f"double_blocks.{i}.processor.proj_lora2", hidden, hidden, f"{block}.txt_attn.proj.weight")
    for i in range(3):
        lora(f"single_blocks.{i}.processor.qkv_lora", hidden, 3 * hidden,
             f"diffusion_model.single_blocks.{i}.linear1.weight", rows=slice(0, 3 * hidden))
        lora(f"single_blocks.{i}.processor.proj_lora", hidden + mlp, hidden,
             f"diffusion_model.single_blocks.{i}.linear2.weight")
    save_file(tensors, str(loras_dir / "flux_xlabs.safetensors"))
    return lambda s: {k: s * v for k, v in host.items()}


def test_flux_xlabs(flux, flux_xlabs):
    report = check(flux, None, "flux_xlabs.safetensors", flux_xlabs)
    assert "xlabs" in report and "base flux" in report


@pytest.fixture(scope="module")
def flux_clip(pack):
    return hosting.mini_clip_flux(seed=3)


def test_flux_text_encoders_clip_l_and_t5_pack_convention(loras_dir, flux, flux_clip, tmp_path):
    """lycoris.kohya on CLIP-L and T5 (host weights): `lora_te1_` and `lora_te2_` (OneTrainer's T5 prefix);
    the same file renamed to sd-scripts' `lora_te3_` for T5. DoRA: reference at s is s × LyCORIS' change at 1
    (the pack's strength convention)."""
    clip_l = producers.copy_weights_(producers.transformers_clip_text(), flux_clip.cond_stage_model.state_dict(),
                                     {k: "clip_l.transformer." + k for k, _ in
                                      producers.transformers_clip_text().named_parameters()})
    t5 = producers.transformers_t5()
    t5 = producers.copy_weights_(t5, flux_clip.cond_stage_model.state_dict(),
                                 {k: "t5xxl.transformer." + k for k, _ in t5.named_parameters()})
    names = producers.module_names(("clip_l.transformer.", clip_l), ("t5xxl.transformer.", t5))
    preset = producers.lycoris_preset(str(tmp_path / "te.toml"), kohya=True,
                                      text_modules=["CLIPAttention", "CLIPMLP", "T5Attention", "T5DenseGatedActDense"])
    network = producers.make_lycoris_kohya([clip_l, t5], torch.nn.Linear(2, 2), "dora_out", seed=85, preset=preset)
    network.save_weights(str(loras_dir / "flux_te_onetrainer.safetensors"), torch.float32, {})
    tensors = load_file(str(loras_dir / "flux_te_onetrainer.safetensors"))
    assert any(k.startswith("lora_te2_encoder_block_1_layer_1_DenseReluDense_wi_0.") for k in tensors)
    save_file({k.replace("lora_te2_", "lora_te3_"): v for k, v in tensors.items()},
              str(loras_dir / "flux_te_kohya.safetensors"))
    reference = producers.lycoris_deltas(network, names, 1.0)  # DoRA: strength interpolates the whole result
    for name in ("flux_te_onetrainer.safetensors", "flux_te_kohya.safetensors"):
        check(flux, flux_clip, name, lambda s: {k: s * d for k, d in reference.items()})
        assert "t5" in inspect.info(loras_dir / name)["text_encoders"]


# --- SD3 -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd3(pack):
    return hosting.mini_model("SD3", seed=6)


@pytest.fixture(scope="module")
def sd3_diffusers(loras_dir, sd3):
    trained = producers.attach_lora(producers.diffusers_sd3(), SD3_TARGETS, rank=4, alpha=4, seed=90)
    producers.save_peft(str(loras_dir / "sd3_diffusers.safetensors"), "StableDiffusion3Pipeline", transformer=trained)
    names = comfy.utils.mmdit_to_diffusers(sd3.model.model_config.unet_config, output_prefix="diffusion_model.")
    deltas, host_state = producers.reference_deltas(trained), sd3.model.state_dict()
    return lambda s: place(deltas, names, host_state, s)


def test_sd3_diffusers_add_q_proj_onto_context_qkv(sd3, sd3_diffusers):
    report = check(sd3, None, "sd3_diffusers.safetensors", sd3_diffusers, host_equal=1.0)
    assert "base sd3" in report


@pytest.mark.parametrize("variant", ["locon", "loha"])
def test_sd3_kohya_joint_blocks(loras_dir, sd3, tmp_path, variant):
    producer = hosting.mini_model("SD3", seed=6).model.diffusion_model
    names = producers.module_names(("diffusion_model.", producer))
    preset = producers.lycoris_preset(str(tmp_path / "sd3.toml"), modules=["JointBlock"], kohya=True)
    network = producers.make_lycoris_kohya(None, producer, variant, seed=91, preset=preset)
    network.save_weights(str(loras_dir / f"sd3_kohya_{variant}.safetensors"), torch.float32, {})
    keys = load_file(str(loras_dir / f"sd3_kohya_{variant}.safetensors"))
    assert any(k.startswith("lora_unet_joint_blocks_0_x_block_attn2_qkv.") for k in keys)
    refs = {s: producers.lycoris_deltas(network, names, s) for s in STRENGTHS}
    check(sd3, None, f"sd3_kohya_{variant}.safetensors", lambda s: refs[s], host_equal=1.0)


# --- SDXL ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl(pack):
    return hosting.mini_model("SDXL", seed=7)


@pytest.fixture(scope="module")
def sdxl_clip(pack):
    return hosting.mini_clip_sdxl(seed=8)


@pytest.fixture(scope="module")
def sdxl_text(loras_dir, sdxl_clip):
    """PEFT on both SDXL text encoders, saved by diffusers (text_encoder/_2) and converted to kohya (te1/te2)."""
    te1 = producers.attach_lora(producers.transformers_clip_text(), producers.TEXT_TARGETS, rank=4, alpha=4, seed=92)
    te2 = producers.attach_lora(producers.transformers_clip_g(), producers.TEXT_TARGETS, rank=4, alpha=4, seed=93)
    path = producers.save_peft(str(loras_dir / "sdxl_te_diffusers.safetensors"), "StableDiffusionXLPipeline",
                               text_encoder=te1, text_encoder_2=te2)
    from diffusers.utils import convert_state_dict_to_kohya

    kohya = convert_state_dict_to_kohya(load_file(path))
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(loras_dir / "sdxl_te_kohya.safetensors"))
    deltas = {**{"clip_l.transformer." + k: d for k, d in producers.reference_deltas(te1).items()},
              **{"clip_g.transformer." + k: d for k, d in producers.reference_deltas(te2).items()}}
    return lambda s: {k: s * d for k, d in deltas.items()}


@pytest.mark.parametrize("name", ["sdxl_te_diffusers.safetensors", "sdxl_te_kohya.safetensors"])
def test_sdxl_te1_te2(sdxl, sdxl_clip, sdxl_text, name):
    if name == "sdxl_te_kohya.safetensors":
        assert any(k.startswith("lora_te2_text_model_encoder_layers_3_") for k in load_file(str(LORAS_DIR[0] / name)))
    report = check(sdxl, sdxl_clip, name, sdxl_text, host_equal=1.0)
    assert "base sdxl" in report


def test_sdxl_kohya_ldm_unet_names(loras_dir, sdxl, tmp_path, pack):
    layers = ["input_blocks.4.1.transformer_blocks.1.attn1.to_q", "input_blocks.4.1.proj_in",
              "middle_block.1.transformer_blocks.3.ff.net.2", "output_blocks.3.0.in_layers.2",
              "input_blocks.1.0.emb_layers.1", "output_blocks.8.0.skip_connection"]
    producer = sdxl.model.diffusion_model
    names = producers.module_names(("diffusion_model.", producer))
    preset = producers.lycoris_preset(str(tmp_path / "sdxl.toml"), names=layers, kohya=True)
    network = producers.make_lycoris_kohya(None, producer, "locon", seed=94, preset=preset)
    try:
        network.save_weights(str(loras_dir / "sdxl_kohya.safetensors"), torch.float32, {})
        refs = {s: producers.lycoris_deltas(network, names, s) for s in STRENGTHS}
    finally:
        for module in producers.lycoris_modules(network):
            module.restore()
    assert "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight" in load_file(
        str(loras_dir / "sdxl_kohya.safetensors"))
    check(sdxl, None, "sdxl_kohya.safetensors", lambda s: refs[s], host_equal=1.0)
