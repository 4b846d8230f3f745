"""Block weights on the real host: A1111 semantics exactly, on miniatures of every architecture.

Reference: the host's own patched weights for the same file at strength 1 (comfy.sd.load_lora_for_models),
times strength × the ratio A1111 lora-block-weight would give the key. The A1111 ratio is computed here
independently, the way A1111 does it: substring search of its BLOCKS list in the underscored key.
LoRA files come from peft + diffusers at test time. Tolerance: ‖ours − ref‖ / ‖ref‖ ≤ 1e-5 per weight.
"""

from __future__ import annotations

import math

import a1111
import comfy.lora
import comfy.sd
import comfy.utils
import miniatures
import producers
import pytest
import torch
from a1111 import ID26, PRESETS
from compare import worst_relative_error

import nodes

TOLERANCE = 1e-5


# A1111 BLOCKS: index i of this list is slot i of the 26 layout; 26/27 ("embedders", "transformer_resblocks") → 0.
A1111_BLOCKS = (["encoder"] + [f"diffusion_model_input_blocks_{i}_" for i in range(12)]
                + ["diffusion_model_middle_block_"] + [f"diffusion_model_output_blocks_{i}_" for i in range(12)]
                + ["embedders", "transformer_resblocks"])


def to26(values):
    return list(a1111.to26(values).values())


def a1111_ratio(key: str, lwei26: list[float]) -> float:
    """A1111 ratiodealer() for an SD key: the last BLOCKS entry found in the underscored key, else 1."""
    ratio = 1.0
    underscored = key.replace(".", "_")
    for i, block in enumerate(A1111_BLOCKS):
        if block in underscored:
            ratio = lwei26[0 if i >= 26 else i]
    return ratio


def a1111_slot(key: str) -> str | None:
    """The A1111 26-layout slot of a key (None when A1111 leaves it at 1)."""
    index = a1111_ratio(key, [100.0 + i for i in range(26)])
    return ID26[int(index) - 100] if index >= 100 else None


def node(name):
    return nodes.NODE_CLASS_MAPPINGS[name]


def expected(host_delta: dict[str, torch.Tensor], strength: float, ratio_of) -> dict[str, torch.Tensor]:
    out = {}
    for key, delta in host_delta.items():
        scale = strength * ratio_of(key)
        if scale != 0:
            out[key] = scale * delta
    return out


def changed(patcher) -> dict[str, torch.Tensor]:
    """The change the patcher's patches make to every patched weight, computed by the host's own
    calculate_weight on a zero weight: for additive adapters that is exactly Σ strength·ΔW, with none of the
    rounding of (W + ΔW) − W that would swamp small block ratios."""
    base = patcher.model.state_dict()
    return {key: comfy.lora.calculate_weight(patches, torch.zeros_like(base[key], dtype=torch.float32), key)
            for key, patches in patcher.patches.items() if patches}


def peft_file(path, trained, prefix: str, host_model):
    """A PEFT LoRA file of `trained` with its keys under `prefix`, and the host's own delta of it."""
    from safetensors.torch import save_file

    save_file({f"{prefix}.{k}": v for k, v in producers.peft_state_dict(trained).items()}, str(path))
    model_delta, _ = host_delta(host_model, None, str(path))
    return str(path), model_delta


def host_delta(model, clip, path):
    lora = comfy.utils.load_torch_file(path, safe_load=True)
    new_model, new_clip = comfy.sd.load_lora_for_models(model, clip, lora, 1.0, 1.0)
    return changed(new_model), (changed(new_clip.patcher) if clip is not None else {})


# SD1 ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd1_file(loras_dir, pack, sd15, sd15_clip):
    unet = producers.attach_lora(producers.diffusers_sd15_unet(), [*producers.UNET_TARGETS, "conv", "conv_in"],
                                 rank=4, alpha=8, seed=20)
    text = producers.attach_lora(producers.transformers_clip_text(), producers.TEXT_TARGETS, rank=4, alpha=8, seed=21)
    path = producers.save_kohya_sd15(str(loras_dir / "blocks_sd1.safetensors"), unet, text)
    model_delta, clip_delta = host_delta(sd15, sd15_clip, path)
    return path, model_delta, clip_delta


def _vector(n: int, seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    return [round(float(v), 3) for v in torch.rand(n, generator=generator) * 1.5 - 0.25]


SD1_SPECS = [(name, values) for name, values in PRESETS.items()] + [
    (",".join(map(str, v)), v) for v in (_vector(17, 1), _vector(26, 2), _vector(12, 3), _vector(20, 4))]


@pytest.mark.parametrize(("spec", "values"), SD1_SPECS, ids=[s if len(s) < 10 else f"{len(v)}v" for s, v in SD1_SPECS])
def test_sd1_a1111_vectors_and_presets_are_exact(sd1_file, sd15, sd15_clip, spec, values):
    _path, model_delta, clip_delta = sd1_file
    lwei = to26(values)
    ours_model, ours_clip, _ = node("LoraDeckLoader").execute(
        model=sd15, lora_name="blocks_sd1.safetensors", strength_model=0.8, clip=sd15_clip, strength_clip=0.6,
        block_weights=spec).args[:3]
    reference = expected(model_delta, 0.8, lambda k: a1111_ratio(k, lwei))
    assert worst_relative_error(changed(ours_model), reference) <= TOLERANCE
    reference_clip = expected(clip_delta, 0.6, lambda k: a1111_ratio(k, lwei))  # BASE on every TE key
    assert worst_relative_error(changed(ours_clip.patcher), reference_clip) <= TOLERANCE


def test_sd1_fixture_covers_every_block(sd1_file):
    _, model_delta, clip_delta = sd1_file
    assert {a1111_slot(k) for k in model_delta} - {None} == set(ID26[1:])
    assert {a1111_slot(k) for k in clip_delta} == {"BASE"} and len(clip_delta) == 72


def test_sd1_named_assignments_and_elements(sd1_file, sd15, sd15_clip):
    _, model_delta, clip_delta = sd1_file
    spec = "IN04-IN05=0, OUT*=0.5, BASE=0.25; @IN07-OUT05:attn2:0.5; @M00:NOT attn:=0"
    ours_model, ours_clip, _ = node("LoraDeckLoader").execute(
        model=sd15, lora_name="blocks_sd1.safetensors", strength_model=1.0, clip=sd15_clip, strength_clip=1.0,
        block_weights=spec).args[:3]

    def ratio(key):
        name = a1111_slot(key)
        value = 0.0 if name in ("IN04", "IN05") else 0.5 if name and name.startswith("OUT") else 1.0
        if name in [*ID26[8:14], *(f"OUT{i:02d}" for i in range(6))] and ".attn2." in key:
            value *= 0.5
        if name == "M00" and "attn" not in key:
            value = 0.0
        return value

    assert worst_relative_error(changed(ours_model), expected(model_delta, 1.0, ratio)) <= TOLERANCE
    assert worst_relative_error(changed(ours_clip.patcher), expected(clip_delta, 1.0, lambda k: 0.25)) <= TOLERANCE


def test_sd1_stack_rows_each_have_their_own_spec(sd1_file, sd15, sd15_clip):
    _, model_delta, _ = sd1_file
    rows = [{"on": True, "lora": "blocks_sd1.safetensors", "strength": 0.5, "clip_strength": 0.5, "blocks": "MIDD"},
            {"on": True, "lora": "blocks_sd1.safetensors", "strength": 0.25, "clip_strength": 0.5, "blocks": "OUTS"}]
    (lora_stack,) = node("LoraDeckStack").execute(rows=rows).args[:1]
    ours_model, _, _ = node("LoraDeckApply").execute(model=sd15, lora_stack=lora_stack, clip=sd15_clip).args
    midd, outs = to26(PRESETS["MIDD"]), to26(PRESETS["OUTS"])
    reference = {k: (0.5 * a1111_ratio(k, midd) + 0.25 * a1111_ratio(k, outs)) * d for k, d in model_delta.items()}
    reference = {k: v for k, v in reference.items() if v.abs().max() > 0}
    assert worst_relative_error(changed(ours_model), reference) <= TOLERANCE


def test_bad_spec_is_a_clear_error(sd1_file, sd15):
    with pytest.raises(Exception, match=r"blocks_sd1\.safetensors: block weights: character 1: 15 values, but a SD15"):
        node("LoraDeckLoader").execute(model=sd15, lora_name="blocks_sd1.safetensors", strength_model=1.0,
                                       block_weights=",".join(["1"] * 15))


# SDXL -----------------------------------------------------------------------------------------------------

def diffusers_sdxl_unet(seed: int = 0):
    """A diffusers SDXL UNet with exactly the shapes of hosting.SDXL_UNET (3 levels, 2/10 transformer layers)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, attention_head_dim=(1, 1, 2),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816, norm_num_groups=32,
    ).eval()


@pytest.fixture(scope="module")
def sdxl():
    return miniatures.build("SDXL", seed=3)


@pytest.fixture(scope="module")
def sdxl_clip(pack):
    """A comfy.sd.CLIP with SDXL's two text encoders (clip_l and clip_g key names), each 64 wide."""
    import functools

    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models_base
    import hosting

    class TinySDXLClip(comfy.sdxl_clip.SDXLClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (the host's signature)
            torch.nn.Module.__init__(self)
            encoder = functools.partial(comfy.sd1_clip.SDClipModel, layer="hidden", layer_idx=-2, device=device,
                                        dtype=dtype, layer_norm_hidden_state=False,
                                        textmodel_json_config=hosting.TINY_CLIP_TEXT)
            self.clip_l = encoder(model_options=model_options)
            self.clip_g = encoder(model_options={**model_options, "model_name": "clip_g"},
                                  return_projected_pooled=True)
            self.dtypes = {dtype}

    target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClip)
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
    hosting.fill_(clip.cond_stage_model, 8)
    return clip


def save_kohya_sdxl(path: str, unet, text_1, text_2) -> str:
    """A kohya SDXL LoRA (lora_unet_ / lora_te1_ / lora_te2_ with .alpha), via diffusers' own converter."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    state = {f"unet.{k}": v for k, v in producers.peft_state_dict(unet).items()}
    state.update({f"text_encoder.{k}": v for k, v in producers.peft_state_dict(text_1).items()})
    state.update({f"text_encoder_2.{k}": v for k, v in producers.peft_state_dict(text_2).items()})
    kohya = {k: (torch.tensor(unet.alpha, dtype=torch.float32) if k.endswith(".alpha") else v.contiguous())
             for k, v in convert_state_dict_to_kohya(state).items()}
    save_file(kohya, path)
    return path


@pytest.fixture(scope="module")
def sdxl_file(loras_dir, pack, sdxl, sdxl_clip):
    unet = producers.attach_lora(diffusers_sdxl_unet(), ["to_q", "to_v", "proj_in", "ff.net.2", "conv1"],
                                 rank=4, alpha=4, seed=22)
    text_1 = producers.attach_lora(producers.transformers_clip_text(seed=2), ["q_proj", "fc1"], rank=4, alpha=4,
                                   seed=27)
    text_2 = producers.attach_lora(producers.transformers_clip_text(seed=3), ["v_proj", "fc2"], rank=4, alpha=4,
                                   seed=28)
    path = save_kohya_sdxl(str(loras_dir / "blocks_sdxl.safetensors"), unet, text_1, text_2)
    model_delta, clip_delta = host_delta(sdxl, sdxl_clip, path)
    return path, model_delta, clip_delta


SDXL_SPECS = [(",".join(map(str, v)), v) for v in (_vector(12, 5), _vector(20, 6))] + [
    (name, PRESETS[name]) for name in ("MIDD", "OUTALL", "ALL0.5")]


@pytest.mark.parametrize(("spec", "values"), SDXL_SPECS,
                         ids=[s if len(s) < 10 else f"{len(v)}v" for s, v in SDXL_SPECS])
def test_sdxl_a1111_vectors_are_exact(sdxl_file, sdxl, sdxl_clip, spec, values):
    _, model_delta, clip_delta = sdxl_file
    assert len(model_delta) > 100
    assert {k.split(".")[0] for k in clip_delta} == {"clip_l", "clip_g"} and len(clip_delta) == 48
    lwei = to26(values)
    ours, ours_clip, _ = node("LoraDeckLoader").execute(
        model=sdxl, lora_name="blocks_sdxl.safetensors", strength_model=0.7, clip=sdxl_clip, strength_clip=1.2,
        block_weights=spec).args[:3]
    assert worst_relative_error(changed(ours), expected(model_delta, 0.7, lambda k: a1111_ratio(k, lwei))) <= TOLERANCE
    reference_clip = expected(clip_delta, 1.2, lambda k: lwei[0])  # BASE scales both text encoders
    assert worst_relative_error(changed(ours_clip.patcher), reference_clip) <= TOLERANCE


# Flux: fused q/k/v row slices from a diffusers LoRA ------------------------------------------------------

@pytest.fixture(scope="module")
def flux():
    return miniatures.build("Flux", seed=4)


@pytest.fixture(scope="module")
def flux_file(loras_dir, pack, flux):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=3,
                                   attention_head_dim=16, num_attention_heads=4, joint_attention_dim=48,
                                   pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6)).eval()
    trained = producers.attach_lora(model, ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "to_out.0",
                                            "proj_mlp", "proj_out", "ff.net.2"], rank=4, alpha=4, seed=23)
    return peft_file(loras_dir / "blocks_flux.safetensors", trained, "transformer", flux)


def test_flux_named_and_fused_elements(flux_file, flux):
    _, model_delta = flux_file
    spec = "D00=0.5, S*=0.3, S02=0; @DOUBLE:img_attn.qkv.k:0; @SINGLE:linear1.mlp:2"
    ours, _, _ = node("LoraDeckLoader").execute(model=flux, lora_name="blocks_flux.safetensors", strength_model=0.9,
                                                block_weights=spec).args[:3]
    hidden = 64
    reference = {}
    for key, delta in model_delta.items():
        scale = torch.ones(delta.shape[0], 1)
        if ".double_blocks.0." in key:
            scale *= 0.5
        if ".single_blocks." in key:
            scale *= 0.0 if ".single_blocks.2." in key else 0.3
        if key.endswith("img_attn.qkv.weight"):
            scale[hidden: 2 * hidden] = 0.0
        if key.endswith("linear1.weight"):
            scale[3 * hidden:] *= 2
        if scale.abs().max() > 0:
            reference[key] = 0.9 * scale * delta
    assert any(k.endswith("linear1.weight") for k in reference) and any(k.endswith("img_attn.qkv.weight")
                                                                         for k in reference)
    assert worst_relative_error(changed(ours), reference) <= TOLERANCE


# Qwen-Image: a further architecture, diffusers names mapped by the host -----------------------------------

@pytest.fixture(scope="module")
def qwen():
    return miniatures.build("QwenImage", seed=5)


@pytest.fixture(scope="module")
def qwen_file(loras_dir, pack, qwen):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    model = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=3,
                                        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                                        axes_dims_rope=(4, 6, 6)).eval()
    trained = producers.attach_lora(model, ["to_q", "to_k", "add_q_proj", "img_mlp.net.2", "txt_mlp.net.2",
                                            "proj_out"], rank=4, alpha=2, seed=24)
    return peft_file(loras_dir / "blocks_qwen.safetensors", trained, "transformer", qwen)


def test_qwen_image_ranges_globs_not_and_elements(qwen_file, qwen):
    _, model_delta = qwen_file
    assert any(".proj_out." in k for k in model_delta) and len(model_delta) > 10
    spec = "default=0.5; B00-B01=0.25; NOT B*=2; @B02:txt_mlp:0"
    ours, _, _ = node("LoraDeckLoader").execute(model=qwen, lora_name="blocks_qwen.safetensors", strength_model=1.0,
                                                block_weights=spec).args[:3]

    def ratio(key):
        if ".transformer_blocks.2." in key:
            return 0.0 if ".txt_mlp." in key else 0.5
        if ".transformer_blocks." in key:
            return 0.25
        return 2.0

    assert worst_relative_error(changed(ours), expected(model_delta, 1.0, ratio)) <= TOLERANCE


# Block maps of every architecture -------------------------------------------------------------------------

ARCHITECTURES = {
    "SD15": ("sd1", {"input_blocks": 12, "middle_block": 1, "output_blocks": 12}),
    "SDXL": ("sdxl", {"input_blocks": 9, "middle_block": 1, "output_blocks": 9}),
    "SD3": ("chains", {"joint_blocks": 2}),
    "Flux": ("double_single", {"double_blocks": 2, "single_blocks": 3}),
    "WAN21_T2V": ("chains", {"blocks": 3}),
    "QwenImage": ("chains", {"transformer_blocks": 3}),
    "Lumina2": ("chains", {"noise_refiner": 2, "context_refiner": 2, "layers": 3}),
    "HunyuanVideo": ("double_single", {"double_blocks": 2, "single_blocks": 3}),
}
NAMED = {
    "SD15": ("IN04-IN05=0, OUT*=0.5; @IN07:attn1:0.2", {"input_blocks.4.1.proj_in": 0, "output_blocks.3.0": 0.5,
                                                       "input_blocks.7.1.transformer_blocks.0.attn1.to_q": 0.2}),
    "SDXL": ("NOT IN* M00=0; @OUT00:ff:=3", {"middle_block.1.proj_in": 1, "output_blocks.0.0": 0,
                                              "output_blocks.0.1.transformer_blocks.9.ff.net.2": 3}),
    "SD3": ("J01=0.5; @J00:context_block:0", {"joint_blocks.1.x_block.attn.qkv": 0.5,
                                              "joint_blocks.0.context_block.attn.proj": 0,
                                              "joint_blocks.0.x_block.attn.proj": 1, "final_layer.linear": 1}),
    "Flux": ("D00-D01=0.5, S*=0.3; IN=0", {"double_blocks.1.img_mlp.0": 0.5, "single_blocks.2.linear2": 0.3,
                                           "img_in": 0, "final_layer.linear": 1}),
    "WAN21_T2V": ("B0?=0.5; @B02:cross_attn:0", {"blocks.0.self_attn.q": 0.5, "blocks.2.cross_attn.k": 0,
                                                 "blocks.2.ffn.0": 0.5, "head.head": 1}),
    "QwenImage": ("default=0, B01=1, FINAL=0.5", {"transformer_blocks.1.attn.to_q": 1,
                                                  "transformer_blocks.0.attn.to_q": 0, "proj_out": 0.5}),
    "Lumina2": ("NR*=0, L01-L02=0.5; @L02:feed_forward:0.5", {"noise_refiner.1.attention.out": 0,
                                                              "layers.1.attention.out": 0.5,
                                                              "layers.2.feed_forward.w1": 0.25,
                                                              "context_refiner.0.attention.out": 1}),
    "HunyuanVideo": ("DOUBLE=0.5, SINGLE=0.25, EMB=0", {"double_blocks.0.img_attn.proj": 0.5,
                                                        "single_blocks.2.linear1": 0.25,
                                                        "txt_in.individual_token_refiner.blocks.0.self_attn.qkv": 0}),
}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_block_map_of_the_live_model(pack, architecture):
    from importlib import import_module

    blocks = import_module(pack.__name__ + ".loader.blocks")
    spec = import_module(pack.__name__ + ".loader.spec")
    model = miniatures.build(architecture)
    state = model.model.state_dict()
    block_map = blocks.BlockMap.from_keys(architecture, state, [])
    family, chains = ARCHITECTURES[architecture]
    assert block_map.family == family
    assert {name: len(ids) for name, ids in block_map.chains.items()} == chains
    weights = [k for k in state if k.startswith("diffusion_model.")]
    assert all(block_map.block_of(k) is not None for k in weights)
    # every model weight the host can patch from a LoRA resolves to a slot
    for target in comfy.lora.model_lora_keys_unet(model.model, {}).values():
        key = target[0] if isinstance(target, tuple) else target
        assert key not in state or block_map.block_of(key) is not None
    text, expectations = NAMED[architecture]
    resolved = spec.parse(text, block_map)
    for fragment, ratio in expectations.items():
        key = next(k for k in weights if k.startswith(f"diffusion_model.{fragment}.") and k.endswith("weight"))
        assert resolved.ratio(key) == pytest.approx(ratio), (fragment, resolved.summary())
    # the A1111-style vector lengths of this model are accepted
    for n in spec.positional_layouts(block_map):
        spec.parse(",".join(["0.5"] * n), block_map)


# Block view: exact norms, table and heatmap ---------------------------------------------------------------

def _block_norms(pack, model, model_delta, clip=None, clip_delta=None):
    from importlib import import_module

    blocks = import_module(pack.__name__ + ".loader.blocks")
    block_map = blocks.BlockMap.from_keys(type(model.model.model_config).__name__, model.model.state_dict(),
                                          list(clip.cond_stage_model.state_dict()) if clip else [])
    energy: dict[str, float] = {}
    for key, delta in {**model_delta, **(clip_delta or {})}.items():
        block = block_map.block_of(key)
        energy[block] = energy.get(block, 0.0) + float(delta.double().norm()) ** 2
    return {b: math.sqrt(e) for b, e in energy.items()}


@pytest.mark.parametrize("case", ["sd1", "sdxl", "flux"])
def test_block_view_norms_equal_full_deltas(request, pack, case):
    from importlib import import_module

    block_view = import_module(pack.__name__ + ".nodes.block_view")
    energy = import_module(pack.__name__ + ".loader.energy")
    spec = import_module(pack.__name__ + ".loader.spec")
    cache = import_module(pack.__name__ + ".loader.cache")
    folders = import_module(pack.__name__ + ".nodes.folders")
    if case == "sd1":
        _, model_delta, clip_delta = request.getfixturevalue("sd1_file")
        model, clip, name = request.getfixturevalue("sd15"), request.getfixturevalue("sd15_clip"), "blocks_sd1"
    elif case == "sdxl":
        _, model_delta, clip_delta = request.getfixturevalue("sdxl_file")
        model, clip, name = request.getfixturevalue("sdxl"), request.getfixturevalue("sdxl_clip"), "blocks_sdxl"
    else:
        _, model_delta = request.getfixturevalue(f"{case}_file")
        model, clip, clip_delta, name = request.getfixturevalue(case), None, None, f"blocks_{case}"
    loaded = cache.shared_cache.load(folders.resolve(f"{name}.safetensors"))
    entries, block_map, _ = block_view._entries(loaded, model, clip)
    table = energy.table(entries, spec.parse("", block_map))
    reference = _block_norms(pack, model, model_delta, clip, clip_delta)
    measured = {b: row.norm for b, row in table.rows.items() if row.keys}
    assert measured.keys() == reference.keys()
    for block, norm in reference.items():
        assert measured[block] == pytest.approx(norm, rel=1e-5), block
    text, image = node("LoraDeckBlockView").execute(lora_name=f"{name}.safetensors", model=model, clip=clip,
                                                    block_weights="").args
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[3] == 3
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    strongest = max(reference, key=reference.get)
    assert f"\n{strongest:<8}" in text and "total ‖ΔW‖" in text


def test_block_view_without_a_model(sd1_file):
    text, image = node("LoraDeckBlockView").execute(lora_name="blocks_sd1.safetensors", block_weights="MIDD").args
    assert "read from the LoRA's names" in text and "IN04" in text and "BASE" in text
    assert image.shape[0] == 1 and image.shape[3] == 3


# The loader's report and the user's presets file ----------------------------------------------------------

def test_loader_report_holds_the_resolved_table(sd1_file, sd15, sd15_clip):
    _, _, report = node("LoraDeckLoader").execute(
        model=sd15, lora_name="blocks_sd1.safetensors", strength_model=1.0, clip=sd15_clip, strength_clip=1.0,
        block_weights="MIDD").args[:3]
    assert "17 values read as A1111 SD1 LoRA" in report
    assert "\n  IN05 " in report and "total ‖ΔW‖" in report
    _, _, plain = node("LoraDeckLoader").execute(model=sd15, lora_name="blocks_sd1.safetensors", strength_model=1.0,
                                                 block_weights="").args[:3]
    assert "total ‖ΔW‖" not in plain


def test_user_presets_file(sd1_file, sd15, tmp_path):
    import folder_paths

    _, model_delta, _ = sd1_file
    previous = folder_paths.get_user_directory()
    folder_paths.set_user_directory(str(tmp_path))
    try:
        (tmp_path / "loradeck").mkdir()
        (tmp_path / "loradeck" / "block_presets.txt").write_text("# mine\nFACE:1,0,0,0,0,0,0,0,1,1,1,0,0,0,0,0,0\n")
        ours, _, report = node("LoraDeckLoader").execute(model=sd15, lora_name="blocks_sd1.safetensors",
                                                         strength_model=1.0, block_weights="FACE").args[:3]
    finally:
        folder_paths.set_user_directory(previous)
    face = to26([1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    assert worst_relative_error(changed(ours), expected(model_delta, 1.0, lambda k: a1111_ratio(k, face))) <= TOLERANCE
    assert "preset FACE" in report


# SD3: joint blocks, both streams, fused q/k/v from a diffusers LoRA ---------------------------------------

@pytest.fixture(scope="module")
def sd3():
    return miniatures.build("SD3", seed=6)


@pytest.fixture(scope="module")
def sd3_file(loras_dir, pack, sd3):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    model = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64,
                                  num_attention_heads=2, joint_attention_dim=48, caption_projection_dim=128,
                                  pooled_projection_dim=32, out_channels=16, pos_embed_max_size=8).eval()
    trained = producers.attach_lora(model, ["to_q", "to_v", "add_q_proj", "add_v_proj", "to_out.0", "ff.net.2"],
                                    rank=4, alpha=4, seed=25)
    return peft_file(loras_dir / "blocks_sd3.safetensors", trained, "transformer", sd3)


def test_sd3_joint_blocks_streams_and_fused_rows(sd3_file, sd3):
    _, model_delta = sd3_file
    assert any("context_block.attn.qkv" in k for k in model_delta) and any("x_block.mlp" in k for k in model_delta)
    spec = "J00=0.5; @J01:context_block:0; @ALLBLOCKS:qkv.v:2"
    ours, _, _ = node("LoraDeckLoader").execute(model=sd3, lora_name="blocks_sd3.safetensors", strength_model=1.0,
                                                block_weights=spec).args[:3]
    hidden = 128
    reference = {}
    for key, delta in model_delta.items():
        scale = torch.full((delta.shape[0], 1), 0.5 if ".joint_blocks.0." in key else 1.0)
        if ".joint_blocks.1.context_block." in key:
            scale.zero_()
        if key.endswith("attn.qkv.weight"):  # the last matching element rule wins, as in A1111's lbwe
            scale[2 * hidden:] = 2 * (0.5 if ".joint_blocks.0." in key else 1.0)
        if scale.abs().max() > 0:
            reference[key] = scale * delta
    assert worst_relative_error(changed(ours), reference) <= TOLERANCE


# Wan 2.1: a further architecture, PEFT on the host's own module, keys in ComfyUI's native naming ----------

@pytest.fixture(scope="module")
def wan():
    return miniatures.build("WAN21_T2V", seed=7)


@pytest.fixture(scope="module")
def wan_file(loras_dir, pack, wan):
    import copy


    module = copy.deepcopy(wan.model.diffusion_model)
    trained = producers.attach_lora(module, ["self_attn.q", "cross_attn.k", "ffn.0", "ffn.2", "head.head",
                                             "text_embedding.0"], rank=4, alpha=4, seed=26)
    return peft_file(loras_dir / "blocks_wan.safetensors", trained, "diffusion_model", wan)


def test_wan_blocks_groups_and_replacing_elements(wan_file, wan):
    _, model_delta = wan_file
    assert any(".head.head." in k for k in model_delta) and any(".text_embedding." in k for k in model_delta)
    spec = "B00=0, B01-B02=0.5; FINAL=2; EMB=0.25; @B02:cross_attn:=1.5"
    ours, _, _ = node("LoraDeckLoader").execute(model=wan, lora_name="blocks_wan.safetensors", strength_model=0.8,
                                                block_weights=spec).args[:3]

    def ratio(key):
        if ".blocks.0." in key:
            return 0.0
        if ".blocks.2.cross_attn." in key:
            return 1.5
        if ".blocks." in key:
            return 0.5
        return 2.0 if ".head." in key else 0.25

    assert worst_relative_error(changed(ours), expected(model_delta, 0.8, ratio)) <= TOLERANCE
