"""LoRA stacks on quantized weights patched by the host itself: a packed layer (runs everywhere) and fp8 checkpoints.

- Contract (every host, CI): the miniature SD3 on test-owned `PackedQ8Ops` (tests/quantized.py): linear
  weights stored as gguf Q8_0 bytes [out, in/32·34], so the state dict holds another shape than the weight,
  dequantized and re-quantized by the host's own `convert_weight` / `set_weight` protocol.
- fp8: the miniature SD3 saved in the layout of the host's fp8 "scaled" checkpoints and loaded by the host's
  own `comfy.sd.load_diffusion_model_state_dict`: on 0.3.75 its `scaled_fp8` ops; on 0.8.0 the same file
  becomes comfy-kitchen mixed-precision layers (`convert_old_quants`, QuantizedTensor weights).
Reference: the host's core LoraLoader (comfy.sd.load_lora_for_models) on the same model. Both are patched by
the host's ModelPatcher (dequantize, calculate_weight, re-quantize with the key's rounding seed) and read back
dequantized by the layer. Tolerance: every element within one rounding step of the format at its magnitude
(Q8_0: its block's scale d; fp8: one unit in the last place × the weight's scale); most elements are equal.
"""

from __future__ import annotations

import comfy.sd
import comfy.utils
import comfyui_version
import hosting
import pytest
import quantized
import torch
from compare import worst_relative_error

CPU = torch.device("cpu")
SEED = 7


@pytest.fixture(scope="module")
def sd3_rows(loras_dir, pack):
    return quantized.make_loras(loras_dir, "SD3", "quant")


def packed_q8_sd3():
    """The miniature SD3 with every linear weight stored as Q8_0 bytes (PackedQ8Ops), in the host's ModelPatcher."""
    import comfy.model_patcher
    import comfy.supported_models

    reference = hosting.mini_model("SD3", seed=SEED)
    config = comfy.supported_models.SD3(dict(reference.model.model_config.unet_config))
    config.set_inference_dtype(torch.float32, None)
    config.custom_operations = quantized.packed_q8_ops()
    model = config.get_model({})
    model.load_state_dict(reference.model.state_dict())
    assert quantized.pack_linears_(model)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def scaled_fp8_sd3():
    """The miniature SD3 as a scaled fp8 checkpoint, loaded by the host's own diffusion-model loader (in inference
    mode, as the host's executor runs a loader node: comfy-kitchen's tensors cannot be detached there otherwise)."""
    reference = hosting.mini_model("SD3", seed=SEED).model.diffusion_model
    state_dict = quantized.scaled_fp8_state_dict(reference.state_dict(), quantized.linear_weight_keys(reference))
    with torch.inference_mode():
        return comfy.sd.load_diffusion_model_state_dict(state_dict)


def nvfp4_sd3():
    """The miniature SD3 as a comfy-kitchen nvfp4 checkpoint, loaded by the host's own diffusion-model loader."""
    reference = hosting.mini_model("SD3", seed=SEED).model.diffusion_model
    state_dict = quantized.nvfp4_state_dict(reference.state_dict(), quantized.linear_weight_keys(reference))
    with torch.inference_mode():
        return comfy.sd.load_diffusion_model_state_dict(state_dict)


def stored_weights(patcher, keys) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """key → (weight as stored after the host patched it, dequantized by its layer; the format's rounding step).

    Under inference mode, as the host's executor runs every node."""
    with torch.inference_mode():
        return _stored_weights(patcher, keys)


def _stored_weights(patcher, keys):
    patcher.patch_model(device_to=CPU)
    try:
        out = {}
        for key in keys:
            owner, name = key.rsplit(".", 1)
            layer = comfy.utils.get_attr(patcher.model, owner)
            tensor = getattr(layer, name)
            convert = getattr(layer, f"convert_{name}", None)
            value = (convert(tensor) if convert is not None else tensor).detach().to(torch.float32).clone()
            out[key] = value, rounding_step(layer, name, tensor, value)
        return out
    finally:
        patcher.unpatch_model(device_to=CPU)


def rounding_step(layer, name, tensor, value) -> torch.Tensor:
    """One rounding step of the weight's stored format at each element's magnitude."""
    params = getattr(tensor, "_params", None)  # comfy-kitchen's QuantizedTensor (0.8.0)
    if getattr(tensor, "_layout_cls", None) == "TensorCoreNVFP4Layout":
        return quantized.nvfp4_step(tensor, value)
    scale = params.scale if params is not None else getattr(layer, "scale_weight", None)  # scaled fp8 (0.3.75)
    if name != "weight" or (scale is None and not hasattr(layer, "weight_shape")):
        return value.abs() * 2 ** -20  # a float32 tensor: the host's fp32 arithmetic only
    if scale is None:  # PackedQ8Ops: Q8_0 blocks
        return quantized.q8_step(tensor, tuple(value.shape))
    scale = scale.to(torch.float32)
    return quantized.fp8_step(value / scale) * scale


def compare_with_host(model, rows) -> dict[str, float]:
    with torch.inference_mode():  # as the host's executor runs the nodes
        ours, report = quantized.deck_stack(model, rows)
        host = quantized.host_stack(model, rows)
    assert "do not fit" not in report and "matched nothing" not in report, report
    keys = quantized.patched_keys(ours, host)
    assert keys == quantized.patched_keys(ours) == quantized.patched_keys(host)
    base = stored_weights(model, keys)
    ours_weights, host_weights = stored_weights(ours, keys), stored_weights(host, keys)
    worst_excess, differing, total = 0.0, 0, 0
    for key in keys:
        (mine, my_step), (theirs, their_step) = ours_weights[key], host_weights[key]
        difference = (mine - theirs).abs()
        # (1e-6 relative: fp32 arithmetic on each side, and 0.8.0 re-derives each side's fp8 scale from its own result)
        arithmetic = 1e-6 * torch.maximum(mine.abs(), theirs.abs())
        worst_excess = max(worst_excess, (difference - torch.maximum(my_step, their_step) - arithmetic).max().item())
        differing += int((difference > arithmetic).sum())  # rounded to another step of the format
        total += difference.numel()
    ours_changes = {key: ours_weights[key][0] - base[key][0] for key in keys}
    host_changes = {key: host_weights[key][0] - base[key][0] for key in keys}
    assert worst_excess <= 0, f"{worst_excess:.3g} beyond one rounding step"
    max_abs = max((ours_changes[k] - host_changes[k]).abs().max().item() for k in keys)
    figures = {"weights": len(keys), "max_abs": max_abs, "max_rel": worst_relative_error(ours_changes, host_changes),
               "differing": differing / total}
    print(f"{figures['weights']} weights: max |ours − host| {figures['max_abs']:.3g}, ‖ours − host‖/‖host change‖ "
          f"{figures['max_rel']:.3g}, {100 * figures['differing']:.3g}% of elements rounded differently")
    return figures


def test_packed_layer_contract(sd3_rows):
    """A layer whose state dict holds Q8_0 bytes, not its weight's shape: no misfits, and the host's result."""
    model = packed_q8_sd3()
    key = "diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"
    assert tuple(model.model.state_dict()[key].shape) == (384, 128 // 32 * 34)
    figures = compare_with_host(model, sd3_rows)
    assert figures["differing"] < 0.01


def test_scaled_fp8_checkpoint(sd3_rows):
    """The host's fp8 checkpoints: scaled_fp8 ops (0.3.75) or comfy-kitchen QuantizedTensor layers (0.8.0)."""
    model = scaled_fp8_sd3()
    layer = model.model.diffusion_model.joint_blocks[0].x_block.attn.qkv
    assert "float8" in str(getattr(layer.weight, "_qdata", layer.weight).dtype), type(layer).__qualname__
    figures = compare_with_host(model, sd3_rows)
    assert figures["differing"] < 0.05


def host_has_nvfp4() -> bool:
    import comfy.quant_ops

    return "nvfp4" in getattr(comfy.quant_ops, "QUANT_ALGOS", {})


@pytest.mark.skipif(not host_has_nvfp4(), reason=f"this host (ComfyUI {comfyui_version.__version__}) has no nvfp4 "
                                                 "layers (comfy-kitchen's nvfp4 arrived with 0.8.0)")
def test_nvfp4_checkpoint(sd3_rows):
    """comfy-kitchen's nvfp4 (weights packed two to a byte, (rows, cols/2)), dequantized and re-quantized on the CPU."""
    model = nvfp4_sd3()
    layer = model.model.diffusion_model.joint_blocks[0].x_block.attn.qkv
    assert tuple(layer.weight.shape) == (384, 128) and tuple(layer.weight._qdata.shape) == (384, 64)
    figures = compare_with_host(model, sd3_rows)
    assert figures["differing"] < 0.05
