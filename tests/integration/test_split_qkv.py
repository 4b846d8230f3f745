"""kohya Flux `split_qkv` files, made as both sd-scripts paths write them, on the host's miniature Flux.

Native: sd-scripts' lora_flux trained with split_qkv (tests/producers.sd_scripts_flux_lora): each q/k/v(/mlp)
part a rank-r LoRA trained at alpha / r, saved fused with alpha unchanged. Reference: the training forward,
cat(up_i(down_i(x))) · alpha / r. The host (comfy.sd.load_lora_for_models), like sd-scripts' own
create_network_from_weights, reads the fused module as rank 3r (4r): a third (a quarter) of that.
Converted: an ai-toolkit file (diffusers/PEFT, rank = alpha) through sd-scripts' convert_flux_lora.py
(tests/producers.sd_scripts_from_ai_toolkit): the same layout with alpha = 3r (4r). Reference: the ai-toolkit
file's own per-part LoRAs (PEFT's merge), which the host matches exactly.
Tolerance: ‖ours − ref‖ / ‖ref‖ ≤ 1e-4 per weight, strengths 0.8 and −0.5.
"""

from __future__ import annotations

import comfy.sd
import comfy.utils
import hosting
import producers
import pytest
import torch
from compare import changed, worst_relative_error
from safetensors.torch import load_file, save_file

import nodes

TOLERANCE = 1e-4
STRENGTHS = (0.8, -0.5)
RANK, ALPHA = 4, 2.0
NOTE = "fused q/k/v modules (kohya split_qkv) applied at the scale they were trained at"
AIT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
               "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "norm1.linear",
               "norm1_context.linear", "proj_mlp", "norm.linear",
               *(f"single_transformer_blocks.{i}.proj_out" for i in range(3))]


@pytest.fixture(scope="module")
def flux(pack):
    return hosting.mini_model("Flux", seed=5)


def apply(model, name, strength, convention=None):
    options = {} if convention is None else {"split_qkv_scale": convention}
    return nodes.NODE_CLASS_MAPPINGS["LoraDeckLoader"].execute(model=model, lora_name=name, strength_model=strength,
                                                               **options).args[:3]


def host_changes(model, path, strength):
    host_model, _ = comfy.sd.load_lora_for_models(model, None, comfy.utils.load_torch_file(path, safe_load=True),
                                                  strength, 0)
    return changed(host_model)


@pytest.fixture(scope="module")
def native(loras_dir, flux):
    """sd-scripts split_qkv training: the file with its metadata, the same tensors with metadata stripped, and
    the training forward per host key (at multiplier 1)."""
    tensors, metadata, trained = producers.sd_scripts_flux_lora(flux.model.diffusion_model, RANK, ALPHA, seed=84,
                                                                split_qkv=True)
    save_file(tensors, str(loras_dir / "kohya_split_qkv.safetensors"), metadata)
    save_file(tensors, str(loras_dir / "kohya_split_qkv_stripped.safetensors"))
    reference = {f"diffusion_model.{path}.weight": producers.sd_scripts_training_delta(parts, RANK, ALPHA, 1.0)
                 for path, parts in trained.values()}
    parts = {f"diffusion_model.{path}.weight": len(p) for path, p in trained.values()}
    return reference, parts


def test_native_file_applies_the_training_forward(loras_dir, flux, native):
    reference, parts = native
    fused = [k for k, n in parts.items() if n > 1]
    assert len(fused) == 7 and {n for n in parts.values()} == {1, 3, 4}  # 2 × (img, txt) qkv, 3 × linear1
    for strength in STRENGTHS:
        model, _, report = apply(flux, "kohya_split_qkv.safetensors", strength)
        ours = changed(model)
        assert worst_relative_error(ours, {k: strength * v for k, v in reference.items()}) <= TOLERANCE, strength
        assert f"unlike ComfyUI core: 7 {NOTE}" in report
        # The host (and sd-scripts' own loader) apply 1/parts of the trained change to each fused module.
        host = host_changes(flux, str(loras_dir / "kohya_split_qkv.safetensors"), strength)
        assert worst_relative_error({k: parts[k] * v for k, v in host.items()}, ours) <= TOLERANCE


def test_native_file_at_core_scale_equals_the_host(loras_dir, flux, native):
    model, _, report = apply(flux, "kohya_split_qkv.safetensors", 0.8, "core")
    host = host_changes(flux, str(loras_dir / "kohya_split_qkv.safetensors"), 0.8)
    assert worst_relative_error(changed(model), host) <= TOLERANCE
    assert "unlike ComfyUI core" not in report


def test_stripped_metadata_reads_as_core_unless_told_trained(loras_dir, flux, native):
    """Without sd-scripts' metadata the layout cannot tell native from converted: core's scale, as every host;
    `trained` brings back the training forward for a file the user knows was trained so."""
    reference, _ = native
    host = host_changes(flux, str(loras_dir / "kohya_split_qkv_stripped.safetensors"), -0.5)
    model, _, report = apply(flux, "kohya_split_qkv_stripped.safetensors", -0.5)
    assert worst_relative_error(changed(model), host) <= TOLERANCE and "unlike ComfyUI core" not in report
    model, _, report = apply(flux, "kohya_split_qkv_stripped.safetensors", -0.5, "trained")
    assert worst_relative_error(changed(model), {k: -0.5 * v for k, v in reference.items()}) <= TOLERANCE
    assert NOTE in report


@pytest.fixture(scope="module")
def converted(loras_dir, flux):
    """An ai-toolkit Flux LoRA (rank 4 = alpha, diffusers keys) converted by sd-scripts' converter; reference:
    the ai-toolkit file's own per-part LoRAs (PEFT's merge), placed on host keys by the host's own name map."""
    trained = producers.attach_lora(producers.diffusers_flux(), AIT_TARGETS, rank=RANK, alpha=RANK, seed=87)
    path = producers.save_peft(str(loras_dir / "flux_ai_toolkit.safetensors"), "FluxPipeline", transformer=trained)
    tensors, used = producers.sd_scripts_from_ai_toolkit(load_file(path), double_blocks=2, single_blocks=3)
    save_file(tensors, str(loras_dir / "kohya_from_ai_toolkit.safetensors"))
    names = comfy.utils.flux_to_diffusers(flux.model.model_config.unet_config, output_prefix="diffusion_model.")
    state = flux.model.state_dict()
    reference: dict[str, torch.Tensor] = {}
    for key, delta in producers.reference_deltas(trained).items():
        target = names[key]
        host_key = target if isinstance(target, str) else target[0]
        full = reference.setdefault(host_key, torch.zeros(state[host_key].shape))
        full.narrow(*target[1]).add_(delta) if not isinstance(target, str) else full.add_(delta)
    assert len(used) == len(producers.reference_deltas(trained))  # every trained module was converted
    return reference


def test_converted_file_equals_ai_toolkit_and_the_host(loras_dir, flux, converted):
    tensors = load_file(str(loras_dir / "kohya_from_ai_toolkit.safetensors"))
    assert tensors["lora_unet_single_blocks_0_linear1.alpha"].item() == 4 * RANK  # the converter's alpha
    for strength in STRENGTHS:
        model, _, report = apply(flux, "kohya_from_ai_toolkit.safetensors", strength)
        ours = changed(model)
        assert worst_relative_error(ours, {k: strength * v for k, v in converted.items()}) <= TOLERANCE, strength
        host = host_changes(flux, str(loras_dir / "kohya_from_ai_toolkit.safetensors"), strength)
        assert worst_relative_error(ours, host) <= TOLERANCE
        assert "unlike ComfyUI core" not in report


def test_converted_file_told_trained_is_three_times_stronger_and_says_so(loras_dir, flux, converted):
    model, _, report = apply(flux, "kohya_from_ai_toolkit.safetensors", 0.8, "trained")
    ours = changed(model)
    qkv = "diffusion_model.double_blocks.0.img_attn.qkv.weight"
    linear1 = "diffusion_model.single_blocks.1.linear1.weight"
    assert ours[qkv].norm() / (0.8 * converted[qkv]).norm() == pytest.approx(3, rel=1e-4)
    assert ours[linear1].norm() / (0.8 * converted[linear1]).norm() == pytest.approx(4, rel=1e-4)
    assert f"unlike ComfyUI core: 7 {NOTE}" in report


def test_unknown_convention_is_refused(flux, native):
    with pytest.raises(ValueError, match="split_qkv scale must be one of auto, trained, core"):
        apply(flux, "kohya_split_qkv.safetensors", 0.8, "thrice")
