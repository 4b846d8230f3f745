"""The three contract nodes against the host's own LoRA loading (comfy.sd.load_lora_for_models, chained).

Fixtures are made by peft + diffusers at test time on models shaped like the miniature SD1 model.
Tolerance: ‖ours − host‖ / ‖host change‖ ≤ 1e-5 per weight, fp32.
"""

from __future__ import annotations

import comfy.sd
import comfy.utils
import producers
import pytest
import torch
from compare import changed, worst_relative_error

import nodes

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def files(loras_dir, pack):
    """name -> path of real LoRA files: kohya (diffusers' converter) and PEFT (diffusers' save_lora_weights)."""
    made = {}
    unet_a = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=4, alpha=8, seed=10)
    text_a = producers.attach_lora(producers.transformers_clip_text(), producers.TEXT_TARGETS, rank=4, alpha=8, seed=11)
    made["kohya_a"] = producers.save_kohya_sd15(str(loras_dir / "kohya_a.safetensors"), unet_a, text_a)
    unet_b = producers.attach_lora(producers.diffusers_sd15_unet(), ["to_q", "to_v", "ff.net.2"], rank=8, alpha=4,
                                   seed=12)
    (loras_dir / "styles").mkdir(exist_ok=True)
    made["kohya_b"] = producers.save_kohya_sd15(str(loras_dir / "styles" / "kohya_b.safetensors"), unet_b, None)
    unet_c = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=4, alpha=4, seed=13)
    text_c = producers.attach_lora(producers.transformers_clip_text(), producers.TEXT_TARGETS, rank=4, alpha=4, seed=14)
    made["peft_c"] = producers.save_peft_sd15(str(loras_dir / "peft_c.safetensors"), unet_c, text_c)
    unet_d = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=2, alpha=1, seed=15)
    text_d = producers.attach_lora(producers.transformers_clip_text(), ["q_proj", "fc2"], rank=2, alpha=1, seed=16)
    made["kohya_d"] = producers.save_kohya_sd15(str(loras_dir / "kohya_d.safetensors"), unet_d, text_d)
    return made


def host_chain(model, clip, loras: list[tuple[str, float, float]]):
    for path, strength_model, strength_clip in loras:
        lora = comfy.utils.load_torch_file(path, safe_load=True)
        model, clip = comfy.sd.load_lora_for_models(model, clip, lora, strength_model, strength_clip)
    return model, clip


def node(name):
    return nodes.NODE_CLASS_MAPPINGS[name]


UNET_MODULES = 330 - 72  # 16 attention blocks × 8 + 25 resnets × 3 − … : every adapted diffusers module, counted


@pytest.mark.parametrize(("strength_model", "strength_clip"), [(0.8, 0.6), (-0.5, 1.3)])
def test_loader_equals_host_kohya(files, sd15, sd15_clip, strength_model, strength_clip):
    ours_model, ours_clip, report = node("LoraDeckLoader").execute(
        model=sd15, lora_name="kohya_a.safetensors", strength_model=strength_model, clip=sd15_clip,
        strength_clip=strength_clip).args[:3]
    host_model, host_clip = host_chain(sd15, sd15_clip, [(files["kohya_a"], strength_model, strength_clip)])
    assert worst_relative_error(changed(ours_model), changed(host_model)) <= TOLERANCE
    assert worst_relative_error(changed(ours_clip.patcher), changed(host_clip.patcher)) <= TOLERANCE
    assert len(changed(ours_model)) == UNET_MODULES and len(changed(ours_clip.patcher)) == 72
    assert "matched nothing" not in report


@pytest.mark.parametrize(("strength_model", "strength_clip"), [(0.8, 0.6), (-0.5, 1.3)])
def test_loader_peft_equals_host_and_producer(files, sd15, sd15_clip, strength_model, strength_clip):
    """The host maps only some of a PEFT SD1 file (it misses `attnN.to_q` etc.); where it maps, we equal it."""
    ours_model, ours_clip, report = node("LoraDeckLoader").execute(
        model=sd15, lora_name="peft_c.safetensors", strength_model=strength_model, clip=sd15_clip,
        strength_clip=strength_clip).args[:3]
    host_model, host_clip = host_chain(sd15, sd15_clip, [(files["peft_c"], strength_model, strength_clip)])
    ours, host = changed(ours_model), changed(host_model)
    assert len(ours) == UNET_MODULES and len(host) == UNET_MODULES - 128
    assert worst_relative_error({k: ours[k] for k in host}, host) <= TOLERANCE
    assert worst_relative_error(changed(ours_clip.patcher), changed(host_clip.patcher)) <= TOLERANCE
    assert "matched nothing" not in report


def test_stack_and_apply_equal_host_chain(files, sd15, sd15_clip):
    rows = {"__value__": [
        {"on": True, "lora": "kohya_a.safetensors", "strength": 0.7, "clip_strength": -0.4, "blocks": ""},
        {"on": False, "lora": "peft_c.safetensors", "strength": 5.0},
        {"on": True, "lora": "styles/kohya_b.safetensors", "strength": -0.5},
    ]}
    other_pack_stack = [("kohya_d.safetensors", 0.9, 0.2), ("None", 1.0, 1.0)]
    (stack,) = node("LoraDeckStack").execute(lora_stack=other_pack_stack, rows=rows).args[:1]
    assert [tuple(e) for e in stack] == [("kohya_d.safetensors", 0.9, 0.2), ("kohya_a.safetensors", 0.7, -0.4),
                                         ("styles/kohya_b.safetensors", -0.5, -0.5)]
    ours_model, ours_clip, _ = node("LoraDeckApply").execute(model=sd15, lora_stack=stack, clip=sd15_clip).args
    host_model, host_clip = host_chain(sd15, sd15_clip, [
        (files["kohya_d"], 0.9, 0.2), (files["kohya_a"], 0.7, -0.4), (files["kohya_b"], -0.5, -0.5)])
    assert worst_relative_error(changed(ours_model), changed(host_model)) <= TOLERANCE
    assert worst_relative_error(changed(ours_clip.patcher), changed(host_clip.patcher)) <= TOLERANCE


def test_emitted_stack_unpacks_as_three_names(files):
    (stack,) = node("LoraDeckStack").execute(rows=[{"lora": "kohya_a.safetensors", "strength": 0.5,
                                                     "blocks": "M00=0"}]).args[:1]
    for lora_name, strength_model, strength_clip in stack:  # how every other pack's consumer reads it
        assert (lora_name, strength_model, strength_clip) == ("kohya_a.safetensors", 0.5, 0.5)
    assert stack[0].blocks == "M00=0"


def test_model_only_skips_text_encoder_quietly(files, sd15):
    model, clip, report = node("LoraDeckLoader").execute(
        model=sd15, lora_name="kohya_a.safetensors", strength_model=1.0).args[:3]
    assert clip is None
    assert "72 text-encoder modules skipped" in report
    assert len(changed(model)) > 50


def test_peft_alpha_from_metadata_matches_producer(loras_dir, sd15, pack):
    """The host ignores PEFT's lora_alpha (scale 1); the producer's merge is the reference here."""
    trained = producers.attach_lora(producers.diffusers_sd15_unet(), ["to_q", "to_k", "ff.net.2"], rank=4, alpha=16,
                                    seed=20)
    producers.save_peft_sd15(str(loras_dir / "peft_alpha16.safetensors"), trained, None)
    model, _, _ = node("LoraDeckLoader").execute(
        model=sd15, lora_name="peft_alpha16.safetensors", strength_model=0.8).args[:3]
    to_host = comfy.utils.unet_to_diffusers(sd15.model.model_config.unet_config)  # diffusers key -> host key
    reference = {"diffusion_model." + to_host[k]: 0.8 * d for k, d in producers.reference_deltas(trained).items()}
    assert worst_relative_error(changed(model), reference) <= TOLERANCE


def test_missing_lora_is_named_with_close_matches(files, sd15):
    message = node("LoraDeckLoader").validate_inputs(lora_name="kohya_a_v2.safetensors")
    assert "LoRA not found: 'kohya_a_v2.safetensors'" in message and "'kohya_a.safetensors'" in message
    message = node("LoraDeckStack").validate_inputs(rows=[{"lora": "style/kohya_b.safetensors"}])
    assert "did you mean 'styles/kohya_b.safetensors'" in message
    assert node("LoraDeckLoader").validate_inputs(lora_name="styles\\kohya_b.safetensors") is True


@pytest.mark.parametrize("name", ["../kohya_a.safetensors", "/etc/passwd", "C:\\loras\\a.safetensors"])
def test_names_never_leave_the_loras_folders(files, name):
    message = node("LoraDeckLoader").validate_inputs(lora_name=name)
    assert message is not True and ("absolute path" in message or "steps out" in message)


def test_lora_for_another_architecture_is_named(loras_dir, sd15):
    from safetensors.torch import save_file

    sdxl_like = {
        "lora_unet_input_blocks_7_1_transformer_blocks_9_attn2_to_k.lora_down.weight": torch.ones(4, 2048),
        "lora_unet_input_blocks_7_1_transformer_blocks_9_attn2_to_k.lora_up.weight": torch.ones(640, 4),
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(4, 1280),
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.ones(5120, 4),
    }
    save_file(sdxl_like, str(loras_dir / "xl_style.safetensors"))
    with pytest.raises(Exception, match=r"xl_style.safetensors: this is a SDXL LoRA but the model is SD15"):
        node("LoraDeckLoader").execute(model=sd15, lora_name="xl_style.safetensors", strength_model=1.0)


def test_strength_change_reads_no_file_again(files, sd15, sd15_clip, pack):
    reads = pack.loader.files.stats  # the pack's own loader module, as the host imported it
    rows = [{"lora": "kohya_a.safetensors", "strength": 0.5}, {"lora": "styles/kohya_b.safetensors", "strength": 1}]
    (stack,) = node("LoraDeckStack").execute(rows=rows).args[:1]
    node("LoraDeckApply").execute(model=sd15, lora_stack=stack, clip=sd15_clip)
    opened = reads.files_opened
    rows[1]["strength"] = 0.25
    (stack,) = node("LoraDeckStack").execute(rows=rows).args[:1]
    model, _, _ = node("LoraDeckApply").execute(model=sd15, lora_stack=stack, clip=sd15_clip).args
    assert reads.files_opened == opened
    assert model.patches  # and the new strength took effect through fresh patches


def test_stacked_peft_and_kohya_equal_host_where_host_maps_both(files, sd15, sd15_clip):
    entries = [("peft_c.safetensors", 0.6, -0.3), ("kohya_a.safetensors", -0.5, 0.9)]
    ours_model, ours_clip, _ = node("LoraDeckApply").execute(model=sd15, lora_stack=entries, clip=sd15_clip).args
    host_model, host_clip = host_chain(sd15, sd15_clip, [(files["peft_c"], 0.6, -0.3),
                                                          (files["kohya_a"], -0.5, 0.9)])
    ours, host = changed(ours_model), changed(host_model)
    both = [k for k in host if len(host_model.patches[k]) == 2]
    assert len(both) == UNET_MODULES - 128
    assert worst_relative_error({k: ours[k] for k in both}, {k: host[k] for k in both}) <= TOLERANCE
    assert worst_relative_error(changed(ours_clip.patcher), changed(host_clip.patcher)) <= TOLERANCE


def test_zero_strengths_return_the_inputs(files, sd15, sd15_clip):
    model, clip, report = node("LoraDeckLoader").execute(
        model=sd15, lora_name="kohya_a.safetensors", strength_model=0.0, clip=sd15_clip, strength_clip=0.0).args[:3]
    assert model is sd15 and clip is sd15_clip and "nothing applied" in report


def test_last_loras_metadata_is_attached_like_the_hosts_loader(files, sd15, sd15_clip):
    model, clip, _ = node("LoraDeckApply").execute(
        model=sd15, clip=sd15_clip, lora_stack=[("kohya_a.safetensors", 1, 1), ("peft_c.safetensors", 1, 1)]).args
    assert model.get_attachment("lora_metadata")["format"] == "pt"  # diffusers writes format: pt
    assert clip.patcher.get_attachment("lora_metadata") is model.get_attachment("lora_metadata")
