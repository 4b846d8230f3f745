"""Detection from the header alone: key style, adapter kinds, base model, text encoders, metadata (loader.inspect).

Files carry the real full-size shapes of each base model's distinctive layers (research/formats.md §1.3, §1.6),
filled with zeros: detection reads names, shapes and metadata only.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

from loader import files, formats, host_keys, inspect


def lora(name, n_in, n_out, rank=4, down=".lora_down.weight", up=".lora_up.weight", alpha=True):
    out = {name + down: torch.zeros(rank, n_in), name + up: torch.zeros(n_out, rank)}
    if alpha:
        out[name + ".alpha"] = torch.tensor(float(rank) / 2)
    return out


def write(tmp_path, name, tensors, metadata=None):
    path = tmp_path / name
    save_file(tensors, str(path), metadata)
    return str(path)


def layout(tmp_path, tensors, metadata=None):
    return formats.describe(files.read_header(write(tmp_path, "x.safetensors", tensors, metadata)))


CASES = {
    "kohya_sd1": ({**lora("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 768, 320),
                   **lora("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768)},
                  "kohya", "sd1", ("clip_l",)),
    "kohya_sd2": ({**lora("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 1024, 320),
                   **lora("lora_te_text_model_encoder_layers_0_mlp_fc1", 1024, 4096)},
                  "kohya", "sd2", ("clip_h",)),
    "kohya_sdxl": ({**lora("lora_unet_input_blocks_7_1_transformer_blocks_9_attn2_to_k", 2048, 1280),
                    **lora("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
                    **lora("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280, 1280)},
                   "kohya", "sdxl", ("clip_g", "clip_l")),
    "kohya_flux": ({**lora("lora_unet_double_blocks_0_img_attn_qkv", 3072, 9216),
                    **lora("lora_unet_single_blocks_0_linear1", 3072, 21504),
                    **lora("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
                    **lora("lora_te3_encoder_block_0_layer_0_SelfAttention_q", 4096, 4096)},
                   "kohya", "flux", ("clip_l", "t5")),
    "onetrainer_t5_only": (lora("lora_te2_encoder_block_0_layer_1_DenseReluDense_wi_0", 4096, 10240), "kohya",
                           None, ("t5",)),
    "kohya_sd3": (lora("lora_unet_joint_blocks_0_x_block_attn_qkv", 1536, 4608), "kohya", "sd3", ()),
    "diffusers_sd3": (lora("transformer.transformer_blocks.0.attn.add_q_proj", 1536, 1536, down=".lora_A.weight",
                           up=".lora_B.weight", alpha=False), "peft", "sd3", ()),
    "diffusers_flux": (lora("transformer.single_transformer_blocks.0.proj_mlp", 3072, 12288, down=".lora_A.weight",
                            up=".lora_B.weight", alpha=False), "peft", "flux", ()),
    "onetrainer_flux": (lora("lora_transformer_single_transformer_blocks_0_attn_to_q", 3072, 3072), "onetrainer",
                        "flux", ()),
    "xlabs": ({**lora("double_blocks.0.processor.qkv_lora1", 3072, 9216, down=".down.weight", up=".up.weight",
                      alpha=False)}, "xlabs", "flux", ()),
    "comfyui_flux": (lora("diffusion_model.double_blocks.0.img_attn.proj", 3072, 3072), "comfyui", "flux", ()),
    "old_diffusers": (lora("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k", 768, 320,
                           down="_lora.down.weight", up="_lora.up.weight", alpha=False), "diffusers-old", "sd1", ()),
    "lycoris_sdxl_te": (lora("lycoris_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", 2048, 640),
                        "lycoris", "sdxl", ()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_family_base_and_text_encoders(tmp_path, case):
    tensors, family, base, text_encoders = CASES[case]
    found = layout(tmp_path, tensors)
    assert (found.family, found.base, found.text_encoders) == (family, base, text_encoders)
    assert found.adapter_kinds == ("lora",) and found.ranks == (4,) and not found.unused


def lycoris_tensors():
    z = torch.zeros
    return {
        "lycoris_a.hada_w1_a": z(64, 4), "lycoris_a.hada_w1_b": z(4, 32), "lycoris_a.hada_w2_a": z(64, 4),
        "lycoris_a.hada_w2_b": z(4, 32), "lycoris_a.alpha": torch.tensor(2.0),
        "lycoris_b.lokr_w1": z(4, 4), "lycoris_b.lokr_w2_a": z(16, 2), "lycoris_b.lokr_w2_b": z(2, 8),
        "lycoris_b.alpha": torch.tensor(1.0),
        "lycoris_c.lokr_w1": z(4, 4), "lycoris_c.lokr_w2": z(16, 8),
        "lycoris_d.weight": z(64), "lycoris_d.on_input": torch.tensor(0),
        "lycoris_e.a1.weight": z(32, 4), "lycoris_e.a2.weight": z(4, 32), "lycoris_e.b1.weight": z(64, 4),
        "lycoris_e.b2.weight": z(4, 32),
        "lycoris_f.oft_blocks": z(8, 8, 8), "lycoris_f.rescale": z(64, 1),
        "lycoris_g.oft_blocks": z(3, 8, 8, 8),
        "lycoris_h.diff": z(64, 32), "lycoris_h.diff_b": z(64),
        "lycoris_i.w_norm": z(64), "lycoris_i.b_norm": z(64),
        "lycoris_j.lora_down.weight": z(4, 32), "lycoris_j.lora_up.weight": z(64, 4),
        "lycoris_j.dora_scale": z(64, 1),
        "lycoris_k.diff_b": z(64),
        "lycoris_l.lora_up.weight": z(64, 4),  # half a module: not understood
    }


def test_every_lycoris_kind_is_told_from_names_and_shapes(tmp_path):
    found = layout(tmp_path, lycoris_tensors())
    kinds = {key: m.kind for key, m in found.modules.items()}
    assert kinds == {"lycoris_a": "loha", "lycoris_b": "lokr", "lycoris_c": "lokr", "lycoris_d": "ia3",
                     "lycoris_e": "glora", "lycoris_f": "oft", "lycoris_g": "boft", "lycoris_h": "full",
                     "lycoris_i": "norm", "lycoris_j": "lora", "lycoris_k": "bias"}
    assert found.adapter_kinds == ("bias", "boft", "full", "glora", "ia3", "loha", "lokr", "lora+dora", "norm", "oft")
    assert found.unused == ("lycoris_l.lora_up.weight",)
    assert found.ranks == (2, 4)


def test_unknown_layout_is_a_problem_naming_it(tmp_path):
    found = layout(tmp_path, {"model.layers.0.something": torch.zeros(3)})
    assert found.problem() == ("has no adapter this version understands (1 tensors in an unknown layout, "
                               "e.g. 'model.layers.0.something')")
    assert formats.describe(files.Header("e.safetensors", {}, {})).problem() == "holds no tensors"


def test_key_candidates_reach_the_host_spellings():
    assert "diffusion_model.double_blocks.3.txt_attn.qkv" in host_keys.key_candidates(
        "double_blocks.3.processor.qkv_lora2")
    assert "diffusion_model.single_blocks.7.linear1_qkv" in host_keys.key_candidates(
        "single_blocks.7.processor.qkv_lora")
    assert "transformer.transformer_blocks.0.attn.to_q" in host_keys.key_candidates(
        "transformer.base_model.model.transformer_blocks.0.attn.to_q")
    assert "lora_te1_text_model_encoder_layers_0_mlp_fc1" in host_keys.key_candidates(
        "lora_te1_encoder_layers_0_mlp_fc1")
    assert "text_encoder.text_model.encoder.layers.0.mlp.fc1" in host_keys.key_candidates(
        "text_encoder.encoder.layers.0.mlp.fc1")
    assert "lora_unet_blocks_0_cross_attn_k" in host_keys.key_candidates("lora_unet__blocks_0_cross_attn_k")
    assert "diffusion_model.joint_blocks.0.x_block.attn.qkv" in host_keys.key_candidates(
        "joint_blocks.0.x_block.attn.qkv")


def test_info_surfaces_kohya_and_modelspec_metadata(tmp_path):
    tensors = {**lora("lora_unet_input_blocks_7_1_transformer_blocks_9_attn2_to_k", 2048, 1280, rank=8),
               **lora("lora_te2_text_model_encoder_layers_0_mlp_fc1", 1280, 5120, rank=8)}
    metadata = {
        "ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": "locon", "conv_dim": "4"}),
        "ss_tag_frequency": json.dumps({"10_cat": {"cat": 10, "orange": 3}, "5_dog": {"cat": 2, " dog": 5}}),
        "ss_resolution": "(1024, 1024)", "ss_output_name": "kitty", "ss_base_model_version": "sdxl_base_v1-0",
        "modelspec.title": "Kitty XL", "modelspec.trigger_phrase": "kitty cat", "modelspec.thumbnail": "data:…",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora", "format": "pt",
    }
    result = inspect.info(write(tmp_path, "kitty.safetensors", tensors, metadata))
    json.dumps(result)  # plain data only
    assert result["file"] == "kitty.safetensors"
    assert (result["format"], result["base"], result["base_label"]) == ("kohya", "sdxl", "SDXL")
    assert result["ranks"] == [8] and result["alphas"] == [4.0] and result["adapter_kinds"] == ["lora"]
    assert result["text_encoders"] == ["clip_g"] and result["text_encoder_modules"] == 1
    assert result["tags"] == [{"tag": "cat", "count": 12}, {"tag": "dog", "count": 5}, {"tag": "orange", "count": 3}]
    assert result["title"] == "Kitty XL" and result["trigger_phrase"] == "kitty cat"
    assert result["resolution"] == [1024, 1024] and result["network_args"]["algo"] == "locon"
    assert result["has_thumbnail"] and "modelspec.thumbnail" not in result["metadata"]
    assert result["metadata"]["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert "format" not in result["metadata"] and result["problem"] is None


def test_info_reads_peft_alpha_from_diffusers_metadata(tmp_path):
    tensors = lora("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 768, 320,
                   down=".lora_A.weight", up=".lora_B.weight", alpha=False)
    metadata = {"lora_adapter_metadata": json.dumps({"unet.r": 4, "unet.lora_alpha": 8, "unet.use_dora": False})}
    result = inspect.info(write(tmp_path, "p.safetensors", tensors, metadata))
    assert (result["format"], result["base"], result["alphas"], result["ranks"]) == ("peft", "sd1", [8.0], [4])


def test_info_on_a_pickle_and_on_a_header(tmp_path):
    tensors = lora("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 768, 320)
    torch.save(tensors, tmp_path / "old.pt")
    result = inspect.info(tmp_path / "old.pt")
    assert (result["format"], result["base"], result["alphas"]) == ("kohya", "sd1", [2.0])
    header = files.read_header(write(tmp_path, "h.safetensors", tensors))
    assert inspect.info(header, read_alphas=False)["alphas"] == []


def test_every_adapter_computes_where_the_weight_lives(tmp_path):
    """The host patches weights on their device (a GPU); adapters keep their tensors on the CPU. On the `meta`
    device every kind must compute without mixing devices."""
    from loader import cache

    tensors = lycoris_tensors()
    tensors.pop("lycoris_l.lora_up.weight")
    tensors["lycoris_b.lokr_w2_a"], tensors["lycoris_b.lokr_w2_b"] = torch.zeros(8, 2), torch.zeros(2, 8)
    tensors["lycoris_b.lokr_w1"] = torch.zeros(8, 4)
    tensors["lycoris_g.oft_blocks"] = torch.zeros(3, 8, 8, 8)
    loaded = cache.read_lora(write(tmp_path, "all.safetensors", tensors))
    assert len(loaded.adapters) == 11
    for key, adapter in loaded.adapters.items():
        shape = (64,) if key in ("lycoris_i", "lycoris_k") else (64, 32)  # a norm layer, a bias
        weight = torch.empty(shape, device="meta")
        assert adapter.delta(weight).device.type == "meta", key
        adapter.apply_(weight, 0.5)
