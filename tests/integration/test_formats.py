"""Every LyCORIS algorithm and the PEFT/diffusers variants on the miniature SD1 model, against the producers.

Files are made at test time by lycoris-lora (create_lycoris and its kohya wrapper), peft + diffusers and
diffusers' converters, on diffusers/transformers models shaped exactly like the host's miniatures. The
reference is the producer's own weight change (LyCORIS: captured from each module's forward pass; PEFT: its
merge), mapped onto host keys with the host's own name maps. Where the host loads a format correctly, the
result must also equal the host's. Tolerance: ‖ours − ref‖ / ‖ref‖ ≤ 1e-4 per weight (fp32 files).

Strength semantics (docs/formats.md): additive types and OFT rotations follow the producer's multiplier; DoRA
is W + s·(W_dora − W) (what the host and A1111 do), so its reference at s is s × the producer's change at 1;
OFT/BOFT `rescale` is interpolated like the rotation, 1 + s·(rescale − 1). Those two references are the pack's
own strength convention, not a producer's forward pass at s: tests (and parameter ids) that rest on them end
in `pack_convention`. At strength 1 they are the producer's own result.
"""

from __future__ import annotations

import copy
import zlib

import comfy.lora
import comfy.sd
import comfy.utils
import producers
import pytest
import torch
from compare import changed, worst_relative_error
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import nodes

TOLERANCE = 1e-4
STRENGTHS = (0.8, -0.5)

# A spread of SD1 layers: conv 3×3 and 1×1, square and non-square linears, a bias-carrying projection.
SD1_LAYERS = [
    "conv_in",
    "time_embedding.linear_1",
    "down_blocks.1.attentions.0.proj_in",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
    "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
    "down_blocks.1.resnets.0.conv1",
    "down_blocks.1.resnets.0.conv_shortcut",
    "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "up_blocks.1.resnets.0.time_emb_proj",
]
NORM_LAYERS = ["down_blocks.1.attentions.0.transformer_blocks.0.norm1", "down_blocks.1.resnets.0.norm1"]

# Where the host's own loading is right. Not: output-axis DoRA (divides by ‖W‖), OFT (strength applied twice),
# IA³ (no adapter), LoKr with Tucker on convs (torch.kron of a non-contiguous factor raises; the host logs it
# and leaves the weight unchanged), BOFT and norms (not checked).
HOST_AGREES = {"locon", "locon_tucker", "dora_in", "loha", "loha_tucker", "lokr", "lokr_both", "lokr_full",
               "glora", "glora_tucker", "full"}
# What the report says where the host does otherwise (at strengths 0.8 and −0.5): every such variant has a note
# and a host result that differs from ours; HOST_AGREES variants have none.
DORA_NOTE, OFT_STRENGTH = "DoRA modules normalised by ‖W + ΔW‖", "OFT modules at a strength other than 1"
CORE_NOTES = {
    "dora_out": [DORA_NOTE], "loha_dora": [DORA_NOTE], "lokr_tucker": ["LoKr Tucker convolutions applied"],
    "ia3": ["IA³ modules applied"], "ia3_input": ["IA³ modules applied"],
    "diag_oft": [OFT_STRENGTH, "clamped to alpha · out_features"],
    "diag_oft_rescaled": [OFT_STRENGTH, "OFT modules with rescale applied"],
    "boft": ["BOFT modules at a strength other than 1"],
    "boft_rescaled": ["BOFT modules at a strength other than 1", "clamped to alpha · out_features"],
}


def node(name):
    return nodes.NODE_CLASS_MAPPINGS[name]


_UNET_NAMES: dict[int, dict[str, str]] = {}


def unet_names(host_model) -> dict[str, str]:
    """diffusers UNet key -> host key (under diffusion_model.), from the host's own map."""
    if id(host_model) not in _UNET_NAMES:
        _UNET_NAMES[id(host_model)] = comfy.utils.unet_to_diffusers(host_model.model.model_config.unet_config)
    return _UNET_NAMES[id(host_model)]


def sd1_host_key(diffusers_key: str, host_model) -> str:
    if diffusers_key.startswith("text_model."):
        return "clip_l.transformer." + diffusers_key
    return "diffusion_model." + unet_names(host_model)[diffusers_key]


_TEMPLATES: dict[int, torch.nn.Module] = {}


def sd1_unet_like(host_model):
    """The diffusers SD1 UNet carrying the host miniature's own weights (a fresh copy each call)."""
    if id(host_model) not in _TEMPLATES:
        unet = producers.diffusers_sd15_unet()
        names = {k: sd1_host_key(k, host_model) for k, _ in unet.named_parameters() if k in unet_names(host_model)}
        _TEMPLATES[id(host_model)] = producers.copy_weights_(unet, host_model.model.state_dict(), names)
    return copy.deepcopy(_TEMPLATES[id(host_model)])


def clip_text_like(host_clip):
    """The transformers CLIP text model carrying the host miniature's own weights (a fresh copy each call)."""
    if id(host_clip) not in _TEMPLATES:
        text = producers.transformers_clip_text()
        names = {k: "clip_l.transformer." + k for k, _ in text.named_parameters()}
        _TEMPLATES[id(host_clip)] = producers.copy_weights_(text, host_clip.cond_stage_model.state_dict(), names)
    return copy.deepcopy(_TEMPLATES[id(host_clip)])


def on_host(deltas: dict[str, torch.Tensor], model, scale: float = 1.0) -> dict[str, torch.Tensor]:
    return {sd1_host_key(k, model): scale * d for k, d in deltas.items()}


def apply(model, clip, name, strength, clip_strength=None):
    return node("LoraDeckLoader").execute(model=model, lora_name=name, strength_model=strength, clip=clip,
                                          strength_clip=strength if clip_strength is None else clip_strength).args[:3]


def host_apply(model, clip, path, strength):
    lora = comfy.utils.load_torch_file(path, safe_load=True)
    return comfy.sd.load_lora_for_models(model, clip, lora, strength, strength)


def _is_dora(variant):
    return producers.LYCORIS_VARIANTS[variant].get("dora_wd", False)


def lycoris_reference(network, names, models, variant, strength):
    """The producer's change at `strength` under our strength semantics (see the module docstring)."""
    if _is_dora(variant):
        return {k: strength * d for k, d in producers.lycoris_deltas(network, names, 1.0, models).items()}
    rescales = [m for m in producers.lycoris_modules(network) if getattr(m, "rescaled", False)]
    saved = [m.rescale.detach().clone() for m in rescales]
    with torch.no_grad():
        for module, rescale in zip(rescales, saved, strict=True):
            module.rescale.copy_(1 + strength * (rescale - 1))
    try:
        return producers.lycoris_deltas(network, names, strength, models)
    finally:
        with torch.no_grad():
            for module, rescale in zip(rescales, saved, strict=True):
                module.rescale.copy_(rescale)


@pytest.fixture(scope="module")
def lycoris_files(loras_dir, pack, sd15, tmp_path_factory):
    """variant -> (path, {strength: reference on host keys}) made by create_lycoris on the diffusers SD1 UNet."""
    presets = tmp_path_factory.mktemp("presets")
    made = {}

    def make(variant):
        if variant not in made:
            unet = sd1_unet_like(sd15)
            names = producers.module_names(("", unet))
            layers = SD1_LAYERS + (NORM_LAYERS if variant == "norms" else [])
            preset = producers.lycoris_preset(str(presets / f"{variant}.toml"), names=layers)
            network = producers.make_lycoris(unet, variant, seed=zlib.crc32(variant.encode()) % 1000, preset=preset)
            path = str(loras_dir / f"lycoris_{variant}.safetensors")
            network.save_weights(path, torch.float32, {"ss_network_module": "lycoris.kohya"})
            refs = {s: lycoris_reference(network, names, [unet], variant, s) for s in STRENGTHS}
            made[variant] = (path, refs)
        return made[variant]

    return make


def _uses_convention(variant):
    return _is_dora(variant) or producers.LYCORIS_VARIANTS[variant].get("rescaled", False)


def _variant_ids(variants):
    """Parameter ids; those whose reference at s ≠ 1 is the pack's strength convention say so."""
    return [pytest.param(v, id=f"{v}-pack_convention" if _uses_convention(v) else v) for v in variants]


@pytest.mark.parametrize("variant", _variant_ids(producers.LYCORIS_VARIANTS))
def test_every_lycoris_algorithm_equals_the_producer(lycoris_files, sd15, variant):
    path, refs = lycoris_files(variant)
    for strength in STRENGTHS:
        model, _, report = apply(sd15, None, path.rsplit("/", 1)[-1], strength)
        ours = changed(model)
        assert worst_relative_error(ours, on_host(refs[strength], sd15)) <= TOLERANCE, (variant, strength)
        assert "matched nothing" not in report and "lycoris" in report
        notes = [line.split(": ", 1)[1] for line in report.splitlines() if "unlike ComfyUI core:" in line]
        expected = CORE_NOTES.get(variant, [])
        assert len(notes) == len(expected) and all(e in n for e, n in zip(expected, notes, strict=True)), notes
        host_model, _ = host_apply(sd15, None, path, strength)
        host = changed(host_model)
        if variant in HOST_AGREES:
            assert set(host) == set(ours), (variant, "the host misses", sorted(set(ours) - set(host)))
            assert worst_relative_error(ours, host) <= TOLERANCE, (variant, strength, "host")
        elif expected:  # the note is true: the host's result is another (a weight it leaves out changes by 0)
            assert worst_relative_error({k: host.get(k, 0 * v) for k, v in ours.items()}, ours) > 1e-3


def test_host_divides_dora_by_the_base_norm_and_we_do_not_pack_convention(lycoris_files, sd15):
    """The documented host defect: output-axis DoRA normalised by ‖W‖ instead of ‖W+ΔW‖."""
    path, refs = lycoris_files("dora_out")
    host_model, _ = host_apply(sd15, None, path, 0.8)
    assert worst_relative_error(changed(host_model), on_host(refs[0.8], sd15)) > 1e-2
    model, _, _ = apply(sd15, None, path.rsplit("/", 1)[-1], 0.8)
    assert worst_relative_error(changed(model), on_host(refs[0.8], sd15)) <= TOLERANCE


def test_weights_a_lora_does_not_target_are_bit_for_bit_unchanged(lycoris_files, sd15):
    path, refs = lycoris_files("locon")
    model, _, _ = apply(sd15, None, path.rsplit("/", 1)[-1], 0.8)
    before = {k: v.detach().clone() for k, v in sd15.model.state_dict().items()}
    targeted = set(on_host(refs[0.8], sd15))
    model.patch_model()  # the host's own patching, in place on the shared module
    try:
        after = model.model.state_dict()
        untouched = [k for k in before if k not in targeted]
        assert len(untouched) > 300
        assert all(torch.equal(after[k], before[k]) for k in untouched)
        assert all(not torch.equal(after[k], before[k]) for k in targeted)
    finally:
        model.unpatch_model()
    assert all(torch.equal(sd15.model.state_dict()[k], before[k]) for k in before)


KOHYA_VARIANTS = ["locon", "loha", "lokr", "dora_out", "ia3", "full"]


@pytest.fixture(scope="module")
def kohya_wrapper_files(loras_dir, pack, sd15, sd15_clip, tmp_path_factory):
    """lycoris.kohya on the diffusers SD1 UNet and the transformers CLIP text model: `lora_unet_` / `lora_te_`."""
    presets = tmp_path_factory.mktemp("kohya_presets")
    made = {}

    def make(variant):
        if variant not in made:
            unet, text = sd1_unet_like(sd15), clip_text_like(sd15_clip)
            names = producers.module_names(("", unet), ("", text))
            preset = producers.lycoris_preset(str(presets / f"{variant}.toml"), names=SD1_LAYERS,
                                              text_modules=["CLIPAttention", "CLIPMLP"], kohya=True)
            network = producers.make_lycoris_kohya(text, unet, variant, seed=7, preset=preset)
            path = str(loras_dir / f"kohya_lycoris_{variant}.safetensors")
            network.save_weights(path, torch.float32, {"ss_network_module": "lycoris.kohya"})
            refs = {s: lycoris_reference(network, names, [unet, text], variant, s) for s in STRENGTHS}
            made[variant] = (path, refs)
        return made[variant]

    return make


@pytest.mark.parametrize("variant", _variant_ids(KOHYA_VARIANTS))
def test_lycoris_kohya_wrapper_with_text_encoder(kohya_wrapper_files, sd15, sd15_clip, variant):
    path, refs = kohya_wrapper_files(variant)
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in load_file(path))
    for strength in STRENGTHS:
        model, clip, report = apply(sd15, sd15_clip, path.rsplit("/", 1)[-1], strength)
        reference = on_host(refs[strength], sd15)
        ours = {**changed(model), **changed(clip.patcher)}
        assert worst_relative_error(ours, reference) <= TOLERANCE, (variant, strength)
        assert "kohya" in report and "matched nothing" not in report
        assert ("unlike ComfyUI core" in report) == (variant in CORE_NOTES), report


# --- PEFT / diffusers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peft_dora(loras_dir, pack, sd15, sd15_clip):
    """PEFT DoRA (lora_magnitude_vector; conv magnitudes [1, out, 1, 1]) via diffusers' save_lora_weights."""
    unet = producers.attach_lora(sd1_unet_like(sd15), ["to_q", "to_k", "ff.net.2", "conv1", "proj_in"],
                                 rank=4, alpha=8, seed=30, use_dora=True)
    text = producers.attach_lora(clip_text_like(sd15_clip), ["q_proj", "fc1"], rank=2, alpha=4, seed=31,
                                 use_dora=True)
    path = producers.save_peft(str(loras_dir / "peft_dora.safetensors"), "StableDiffusionPipeline",
                               unet=unet, text_encoder=text)
    return path, {**producers.reference_deltas(unet), **producers.reference_deltas(text)}


@pytest.mark.parametrize("strength", STRENGTHS)
def test_peft_dora_scaled_producer_change_pack_convention(peft_dora, sd15, sd15_clip, strength):
    """Reference: s × PEFT's merged change at scale 1 (PEFT itself would scale ΔW inside the norm)."""
    path, deltas = peft_dora
    assert any(k.endswith("conv1.lora_magnitude_vector") for k in load_file(path))
    model, clip, report = apply(sd15, sd15_clip, "peft_dora.safetensors", strength)
    ours = {**changed(model), **changed(clip.patcher)}
    assert worst_relative_error(ours, on_host(deltas, sd15, strength)) <= TOLERANCE
    assert "lora+dora" in report
    # The host drops the magnitudes and ignores lora_alpha (8 at rank 4 here; 4 at rank 2 for the text encoder).
    assert "unlike ComfyUI core: 142 PEFT DoRA magnitudes applied; ComfyUI core drops them" in report
    assert "unlike ComfyUI core: 142 modules applied with the lora_alpha from the file's PEFT metadata" in report


def test_renamed_spellings_of_the_same_file_pack_convention(loras_dir, lycoris_files, kohya_wrapper_files, peft_dora,
                                                           sd15, sd15_clip):
    """kohya OFT's `oft_unet_` prefix (same rotation as diag-OFT), transformers ≥ 5.6 text-encoder names without
    `text_model`, and ai-toolkit's `.magnitude` for PEFT's DoRA magnitude: same tensors, other names. The DoRA
    reference at 0.8 is 0.8 × PEFT's change at 1 (the pack's strength convention)."""
    path, refs = lycoris_files("diag_oft")
    save_file({k.replace("lycoris_", "oft_unet_", 1): v for k, v in load_file(path).items()},
              str(loras_dir / "kohya_oft.safetensors"))
    model, _, _ = apply(sd15, None, "kohya_oft.safetensors", 0.8)
    assert worst_relative_error(changed(model), on_host(refs[0.8], sd15)) <= TOLERANCE

    path, refs = kohya_wrapper_files("locon")
    save_file({k.replace("lora_te_text_model_encoder_", "lora_te_encoder_"): v for k, v in load_file(path).items()},
              str(loras_dir / "kohya_new_te_names.safetensors"))
    model, clip, _ = apply(sd15, sd15_clip, "kohya_new_te_names.safetensors", -0.5)
    reference = on_host(refs[-0.5], sd15)
    assert worst_relative_error({**changed(model), **changed(clip.patcher)}, reference) <= TOLERANCE

    path, deltas = peft_dora
    metadata = safe_open(path, "pt").metadata()  # PEFT's alpha lives there
    save_file({k.replace("lora_magnitude_vector", "magnitude").replace(".text_model.", "."): v
               for k, v in load_file(path).items()}, str(loras_dir / "aitoolkit_dora.safetensors"), metadata)
    model, clip, _ = apply(sd15, sd15_clip, "aitoolkit_dora.safetensors", 0.8)
    assert worst_relative_error({**changed(model), **changed(clip.patcher)}, on_host(deltas, sd15, 0.8)) <= TOLERANCE


def test_peft_dora_through_diffusers_kohya_converter_pack_convention(loras_dir, sd15):
    """convert_state_dict_to_kohya leaves a dot inside DoRA magnitude ids (`…_attn1.to_q.lora_magnitude_vector`)
    and writes alpha = rank; with lora_alpha = r that alpha is faithful, and the magnitudes must still join.
    Reference at −0.5: −0.5 × PEFT's change at 1 (the pack's DoRA strength convention)."""
    from diffusers.utils import convert_state_dict_to_kohya

    unet = producers.attach_lora(sd1_unet_like(sd15), ["to_q", "ff.net.2", "conv1"], rank=4, alpha=4, seed=35,
                                 use_dora=True)
    converted = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in producers.peft_state_dict(unet).items()})
    assert any(".to_q.lora_magnitude_vector" in k for k in converted)
    save_file({k: v.contiguous() for k, v in converted.items()}, str(loras_dir / "kohya_from_peft_dora.safetensors"))
    model, _, report = apply(sd15, None, "kohya_from_peft_dora.safetensors", -0.5)
    reference = on_host(producers.reference_deltas(unet), sd15, -0.5)
    assert worst_relative_error(changed(model), reference) <= TOLERANCE
    assert "lora+dora" in report and "no layout" not in report


@pytest.fixture(scope="module")
def peft_variants(loras_dir, pack, sd15):
    """PEFT options that change the math: rsLoRA, rank/alpha patterns, lora_B bias."""
    made = {}
    options = {
        "rslora": {"use_rslora": True},
        "patterns": {"rank_pattern": {"to_k": 2}, "alpha_pattern": {"ff.net.2": 16}},
        "bias": {"lora_bias": True},
    }
    for i, (name, extra) in enumerate(options.items()):
        targets = ["to_out.0", "ff.net.2", "proj_out"] if name == "bias" else ["to_q", "to_k", "ff.net.2", "proj_out"]
        unet = producers.attach_lora(sd1_unet_like(sd15), targets, rank=4, alpha=8, seed=40 + i, **extra)
        if name == "bias":
            with torch.no_grad():
                for param_name, param in unet.model.named_parameters():
                    if param_name.endswith("lora_B.default.bias"):
                        param.copy_(torch.randn(param.shape) * 0.1)
        path = producers.save_peft(str(loras_dir / f"peft_{name}.safetensors"), "StableDiffusionPipeline", unet=unet)
        made[name] = (path, {s: producers.reference_deltas(unet, s) for s in STRENGTHS})
    return made


@pytest.mark.parametrize("name", ["rslora", "patterns", "bias"])
def test_peft_options_equal_the_producer(peft_variants, sd15, name):
    path, refs = peft_variants[name]
    if name == "bias":
        assert any(k.endswith("lora_B.bias") for k in load_file(path))
        assert any(k.endswith(".bias") for k in refs[0.8])
    for strength in STRENGTHS:
        model, _, _ = apply(sd15, None, path.rsplit("/", 1)[-1], strength)
        assert worst_relative_error(changed(model), on_host(refs[strength], sd15)) <= TOLERANCE, strength


def test_old_diffusers_mixed_names(loras_dir, sd15, sd15_clip):
    """convert_state_dict_to_diffusers (older scripts): `lora.down`, `lora_linear_layer`, mixed with lora_A/B."""
    from diffusers.utils import convert_state_dict_to_diffusers

    unet = producers.attach_lora(sd1_unet_like(sd15), producers.UNET_TARGETS, rank=4, alpha=4, seed=50)
    text = producers.attach_lora(clip_text_like(sd15_clip), producers.TEXT_TARGETS, rank=4, alpha=4, seed=51)
    state = {**{f"unet.{k}": v for k, v in producers.peft_state_dict(unet).items()},
             **{f"text_encoder.{k}": v for k, v in producers.peft_state_dict(text).items()}}
    converted = {k: v.contiguous() for k, v in convert_state_dict_to_diffusers(state).items()}
    assert any(".lora.down.weight" in k for k in converted) and any("lora_linear_layer" in k for k in converted)
    save_file(converted, str(loras_dir / "diffusers_old.safetensors"))
    deltas = {**producers.reference_deltas(unet), **producers.reference_deltas(text)}
    model, clip, report = apply(sd15, sd15_clip, "diffusers_old.safetensors", 0.8, -0.5)
    reference = on_host(deltas, sd15)
    ours = {**changed(model), **changed(clip.patcher)}
    scale = {k: (-0.5 if k.startswith("clip_l.") else 0.8) for k in reference}
    assert worst_relative_error(ours, {k: scale[k] * d for k, d in reference.items()}) <= TOLERANCE
    assert report.startswith("diffusers_old.safetensors: diffusers-old")
    assert "unlike ComfyUI core" not in report  # lora_alpha = r: scale 1, as the host reads it


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_half_and_fp8_files_are_computed_in_fp32(loras_dir, sd15, pack, tmp_path, dtype):
    """Files stored in fp16/bf16/fp8: the producer's weights rounded to that dtype are the reference."""
    unet = sd1_unet_like(sd15)
    names = producers.module_names(("", unet))
    preset = producers.lycoris_preset(str(tmp_path / "p.toml"), names=SD1_LAYERS)
    network = producers.make_lycoris(unet, "loha", seed=60, preset=preset)
    with torch.no_grad():
        for param in network.parameters():
            param.copy_(param.to(dtype).to(torch.float32))
    name = f"lycoris_loha_{str(dtype).split('.')[-1]}.safetensors"
    network.save_weights(str(loras_dir / name), dtype, {})
    assert {str(v.dtype) for k, v in load_file(str(loras_dir / name)).items() if "hada" in k} == {str(dtype)}
    reference = on_host(producers.lycoris_deltas(network, names, 0.8, [unet]), sd15)
    model, _, _ = apply(sd15, None, name, 0.8)
    assert worst_relative_error(changed(model), reference) <= TOLERANCE


# --- unsupported and unknown layouts -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unknown_layout(loras_dir, pack):
    save_file({"model.layers.0.mystery_adapter.P": torch.ones(4, 4), "model.layers.0.mystery_adapter.Q": torch.ones(4)},
              str(loras_dir / "mystery.safetensors"))
    (loras_dir / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    return "mystery.safetensors"


def test_unknown_layout_stops_with_a_message_naming_file_and_layout(unknown_layout, sd15):
    with pytest.raises(Exception, match=r"mystery\.safetensors: has no adapter this version understands .*"
                                        r"unknown layout, e\.g\. 'model\.layers\.0\.mystery_adapter\.P'"):
        apply(sd15, None, "mystery.safetensors", 1.0)
    with pytest.raises(Exception, match=r"truncated\.safetensors: .*truncated"):
        apply(sd15, None, "truncated.safetensors", 1.0)


def test_skip_unloadable_continues_with_the_loras_that_load(unknown_layout, lycoris_files, sd15):
    path, refs = lycoris_files("locon")
    stack = [(unknown_layout, 1.0, 1.0), ("truncated.safetensors", 1.0, 1.0), (path.rsplit("/", 1)[-1], 0.8, 0.8)]
    with pytest.raises(Exception, match=r"mystery\.safetensors"):
        node("LoraDeckApply").execute(model=sd15, lora_stack=stack)
    model, _, report = node("LoraDeckApply").execute(model=sd15, lora_stack=stack, skip_unloadable=True).args
    assert worst_relative_error(changed(model), on_host(refs[0.8], sd15)) <= TOLERANCE
    lines = report.splitlines()
    assert lines[0].startswith("mystery.safetensors: skipped, has no adapter this version understands")
    assert lines[1].startswith("truncated.safetensors: skipped,") and "truncated" in lines[1]
    _, _, report = node("LoraDeckLoader").execute(model=sd15, lora_name=unknown_layout, strength_model=1.0,
                                                  skip_unloadable=True).args[:3]
    assert "skipped" in report


def test_report_counts_and_names_unmatched_modules(loras_dir, sd15):
    tensors = load_file(producers.save_kohya_sd15(
        str(loras_dir / "partly.safetensors"),
        producers.attach_lora(sd1_unet_like(sd15), ["to_q"], rank=2, alpha=2, seed=70), None))
    tensors["lora_unet_not_a_layer_anywhere.lora_down.weight"] = torch.ones(2, 8)
    tensors["lora_unet_not_a_layer_anywhere.lora_up.weight"] = torch.ones(8, 2)
    tensors["lora_unet_weird.set_weight"] = torch.ones(3)
    save_file(tensors, str(loras_dir / "partly.safetensors"))
    _, _, report = apply(sd15, None, "partly.safetensors", 1.0)
    assert "1 modules matched nothing in this model (e.g. lora_unet_not_a_layer_anywhere)" in report
    assert "1 tensors in no layout this version understands" in report
    assert "model 1 → 32 weights" in report  # attn1.to_q and attn2.to_q of 16 transformer blocks
