"""Quantized miniatures: GGUF files, scaled-fp8 checkpoints and a packed layer, from the host's own classes.

- GGUF files are written with the `gguf` package's writer as city96's convert tool lays them out (arch in
  `general.architecture`; matrix weights quantized, the rest F32): Q8_0 by gguf's own quantize; the K-quant Q6_K
  by `q6_k_blocks`, a test-owned encoder (gguf-py can only decode K-quants; llama.cpp's C tool makes them),
  checked against gguf's own dequantize.
- `scaled_fp8_state_dict` turns a state dict into what the host's fp8 "scaled" checkpoints hold: every
  linear weight in float8_e4m3fn with its `scale_weight`, and the `scaled_fp8` marker the host detects.
- `PackedQ8Ops`: test-owned host ops whose linear layers store their weight as Q8_0 bytes [out, in/32·34] and
  follow the host's protocol for quantized layers (`convert_weight` dequantizes, `set_weight` re-quantizes),
  so the host's own ModelPatcher patches them: a layer whose state dict holds another shape than its weight.
"""

from __future__ import annotations

import json
import os

import gguf
import numpy as np
import torch

Q8_0 = gguf.GGMLQuantizationType.Q8_0
Q6_K = gguf.GGMLQuantizationType.Q6_K
F32 = gguf.GGMLQuantizationType.F32
QK_K = 256


def q6_k_blocks(values: np.ndarray) -> np.ndarray:
    """Q6_K bytes (ggml's block: ql[128], qh[64], int8 scales[16], fp16 d) of rows whose length is a multiple of 256."""
    rows = values.shape[:-1]
    blocks = values.astype(np.float32).reshape(-1, QK_K)
    n = blocks.shape[0]
    groups = blocks.reshape(n, 16, 16)
    step_wanted = np.abs(groups).max(axis=2) / 31  # q in −32…31 per group of 16
    d16 = (step_wanted.max(axis=1, keepdims=True) / 127).astype(np.float16)
    d = d16.astype(np.float32)
    scales = np.round(np.divide(step_wanted, d, out=np.zeros_like(step_wanted), where=d > 0)).clip(-128, 127)
    step = d * scales
    q = np.round(np.divide(groups, step[..., None], out=np.zeros_like(groups), where=step[..., None] > 0))
    codes = (q.clip(-32, 31) + 32).astype(np.uint8).reshape(n, 8, 32)  # code group g holds values 32g…32g+31
    low, high = codes & 0x0F, codes >> 4
    low = low.reshape(n, 2, 2, 2, 32)  # (half h, nibble s, c, j): group g = 4h + 2s + c
    ql = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(n, 128)
    high = high.reshape(n, 2, 4, 32)  # (half h, bit pair t, j): group g = 4h + t
    qh = (high[:, :, 0] | high[:, :, 1] << 2 | high[:, :, 2] << 4 | high[:, :, 3] << 6).reshape(n, 64)
    out = np.concatenate([ql, qh, scales.astype(np.int8).view(np.uint8), d16.view(np.uint8)], axis=1)
    return out.reshape(*rows, -1)


def gguf_encoding(key: str, tensor: torch.Tensor, k_quant: bool) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """(data, type) of one tensor: a matrix weight in Q6_K where rows allow and asked, else in Q8_0 where rows
    allow; everything else (biases, norms, embeddings such as SD3's pos_embed) in F32."""
    values = tensor.detach().to(torch.float32).numpy()
    if values.ndim != 2 or not key.endswith(".weight"):
        return values, F32
    if k_quant and values.shape[-1] % QK_K == 0:
        return q6_k_blocks(values), Q6_K
    if values.shape[-1] % gguf.GGML_QUANT_SIZES[Q8_0][0] == 0:
        return gguf.quants.quantize(values, Q8_0), Q8_0
    return values, F32


def write_gguf(path: str, state_dict: dict[str, torch.Tensor], arch: str, k_quant: bool) -> dict[str, str]:
    """A .gguf diffusion model file; returns each tensor's quantization type name."""
    writer = gguf.GGUFWriter(None, arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    types = {}
    for key, tensor in state_dict.items():
        data, qtype = gguf_encoding(key, tensor, k_quant)
        writer.add_tensor(key, data, raw_dtype=qtype)
        types[key] = qtype.name
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return types


def linear_weight_keys(module: torch.nn.Module, prefix: str = "") -> list[str]:
    return [f"{prefix}{name}.weight" for name, layer in module.named_modules() if isinstance(layer, torch.nn.Linear)]


def scaled_fp8_state_dict(state_dict: dict[str, torch.Tensor], linear_keys: list[str],
                          dtype=torch.float8_e4m3fn) -> dict[str, torch.Tensor]:
    """The host's scaled fp8 checkpoint layout: linear weights as fp8 with a per-tensor `scale_weight`."""
    out = dict(state_dict)
    for key in linear_keys:
        weight = state_dict[key].to(torch.float32)
        scale = weight.abs().max() / torch.finfo(dtype).max
        out[key] = (weight / scale).to(dtype)
        out[key.removesuffix("weight") + "scale_weight"] = scale.reshape(())
    out["scaled_fp8"] = torch.zeros(2, dtype=dtype)  # two elements: no input scaling (fp8 matmul off)
    return out


def nvfp4_state_dict(state_dict: dict[str, torch.Tensor], linear_keys: list[str]) -> dict[str, torch.Tensor]:
    """comfy-kitchen's nvfp4 checkpoint layout (0.8.0), made by comfy-kitchen's own quantize: per linear layer the
    packed weight (rows, cols/2) in uint8, its fp8 block scales `weight_scale`, its tensor scale `weight_scale_2`
    and the `comfy_quant` record naming the format."""
    from comfy_kitchen.tensor import TensorCoreNVFP4Layout

    out = dict(state_dict)
    record = torch.tensor(list(json.dumps({"format": "nvfp4"}).encode()), dtype=torch.uint8)
    for key in linear_keys:
        qdata, params = TensorCoreNVFP4Layout.quantize(state_dict[key].to(torch.float32))
        for suffix, tensor in TensorCoreNVFP4Layout.state_dict_tensors(qdata, params).items():
            out[key + suffix] = tensor
        out[key.removesuffix("weight") + "comfy_quant"] = record.clone()
    return out


def nvfp4_step(weight, values: torch.Tensor) -> torch.Tensor:
    """One fp4 (e2m1: 0, ½, 1, 1½, 2, 3, 4, 6) step at each value of an nvfp4 QuantizedTensor, in weight units.

    Each element's scale (block scale × tensor scale) is read by comfy-kitchen's own dequantize of code 1.0."""
    ones = torch.full_like(weight._qdata, 0x22)  # two e2m1 codes 0b0010 = 1.0 per byte
    scale = weight.layout_cls.dequantize(ones, weight._params).to(torch.float32).reshape(values.shape)
    codes = (values / scale).abs()
    return torch.where(codes < 2, 0.5, torch.where(codes < 4, 1.0, 2.0)) * scale


def fp8_step(values: torch.Tensor, dtype=torch.float8_e4m3fn) -> torch.Tensor:
    """One unit in the last place of `dtype` at each value's magnitude (the format's rounding step)."""
    mantissa = {torch.float8_e4m3fn: 3, torch.float8_e5m2: 2}[dtype]
    tiny = torch.finfo(dtype).smallest_normal
    exponent = torch.floor(torch.log2(values.abs().clamp(min=tiny)))
    return torch.exp2(exponent - mantissa)


# --- a packed layer under the host's quantized-layer protocol ------------------------------------------------

def q8_pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(gguf.quants.quantize(weight.detach().to(torch.float32).cpu().numpy(), Q8_0))


def q8_unpack(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    data = packed.detach().to(device="cpu", dtype=torch.uint8).numpy()  # the host hands a float copy of the bytes
    return torch.from_numpy(gguf.quants.dequantize(data, Q8_0).reshape(shape).copy())


def q8_step(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Each element's Q8_0 rounding step: its block's fp16 scale d."""
    blocks = packed.to(torch.uint8).reshape(shape[0], -1, 34)
    d = blocks[..., :2].contiguous().view(torch.float16).to(torch.float32)  # [rows, blocks, 1]
    return d.expand(shape[0], shape[1] // 32, 32).reshape(shape)


def packed_q8_ops():
    import comfy.ops

    class PackedQ8Ops(comfy.ops.manual_cast):
        class Linear(comfy.ops.manual_cast.Linear):
            comfy_cast_weights = True

            def weight_shape(self) -> tuple[int, int]:
                return self.out_features, self.in_features

            def convert_weight(self, weight, inplace=False, **kwargs):
                return q8_unpack(weight, self.weight_shape()).to(weight.device)

            def set_weight(self, weight, inplace_update=False, seed=None, return_weight=False, **kwargs):
                packed = q8_pack(weight).to(self.weight.device)
                if return_weight:
                    return packed
                if inplace_update:
                    self.weight.data.copy_(packed)
                else:
                    self.weight = torch.nn.Parameter(packed, requires_grad=False)

            def forward_comfy_cast_weights(self, input):
                weight = self.convert_weight(self.weight).to(input.dtype)
                bias = None if self.bias is None else self.bias.to(input.dtype)
                return torch.nn.functional.linear(input, weight, bias)

    return PackedQ8Ops


def pack_linears_(module: torch.nn.Module) -> list[str]:
    """Store every filled PackedQ8Ops linear weight as Q8_0 bytes (through its own set_weight); returns the keys."""
    keys = []
    for name, layer in module.named_modules():
        if hasattr(layer, "set_weight") and hasattr(layer, "weight_shape"):
            layer.set_weight(layer.weight.data)
            keys.append(f"{name}.weight")
    return keys


# --- the stack under test and the host's own loader, on the same model ---------------------------------------

LORA_TARGETS = {
    "Flux": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
             "ff.net.0.proj", "ff.net.2", "ff_context.net.2", "norm1.linear", "proj_mlp", "proj_out"],
    "SD3": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_v_proj", "to_add_out", "ff.net.0.proj",
            "ff.net.2", "ff_context.net.2", "norm1.linear"],
}
STRENGTHS = (0.8, -0.6)


def make_loras(folder: str | os.PathLike, family: str, tag: str) -> list[tuple[str, float]]:
    """Two diffusers/PEFT LoRAs (ranks 4 and 8) for the family's miniature, as stack rows (name, strength).

    alpha = rank: the host reads diffusers files without their alpha, so only then is it right about them."""
    import producers

    model, pipeline = {"Flux": (producers.diffusers_flux, "FluxPipeline"),
                       "SD3": (producers.diffusers_sd3, "StableDiffusion3Pipeline")}[family]
    rows = []
    for i, strength in enumerate(STRENGTHS):
        name = f"{tag}_{family}_{i}.safetensors"
        trained = producers.attach_lora(model(), LORA_TARGETS[family][i:], rank=4 * (i + 1), alpha=4 * (i + 1),
                                        seed=60 + i)
        producers.save_peft(os.path.join(folder, name), pipeline, transformer=trained)
        rows.append((name, strength))
    return rows


def deck_stack(model, rows):
    """LoRA Deck's stack (LoraDeckStack → LoraDeckApply) on `model`: (patched model, report text)."""
    import nodes

    (stack,) = nodes.NODE_CLASS_MAPPINGS["LoraDeckStack"].execute(
        rows=[{"lora": name, "strength": strength} for name, strength in rows]).args[:1]
    new_model, _, report = nodes.NODE_CLASS_MAPPINGS["LoraDeckApply"].execute(model=model, lora_stack=stack).args
    return new_model, report


def host_stack(model, rows):
    """The host's core LoraLoaderModelOnly once per row (comfy.sd.load_lora_for_models)."""
    import nodes

    loader = nodes.NODE_CLASS_MAPPINGS["LoraLoaderModelOnly"]()
    for name, strength in rows:
        (model,) = loader.load_lora_model_only(model, name, strength)
    return model


def patched_keys(*patchers) -> list[str]:
    return sorted({key for patcher in patchers for key, patches in patcher.patches.items() if patches})
