"""The shape of every weight of a live torch module as its layer computes with it (the logical shape).

Quantized layers store another layout than the weight they compute with, and their state dict reports the
storage: a GGUF Q8_0 weight [192, 64] (city96's ComfyUI-GGUF) sits in 34-byte blocks as [192, 68] bytes,
comfy-kitchen's nvfp4 packs two values a byte (rows, cols/2), a layer that dequantizes through the host's
`convert_weight` may keep any byte layout. A LoRA's change lands on the logical weight, so each entry's
shape is asked, in this order, of:

1. the layer, for the weight of a linear layer: (out_features, in_features) is what it multiplies with,
   whatever the storage;
2. the live tensor: tensor subclasses that pack report their logical `shape` (GGUF's GGMLTensor from its
   `tensor_shape`, comfy-kitchen's QuantizedTensor from its original shape), plain tensors are unpacked;
3. the state dict, for entries that are no tensor of the module (GGUF's `temp.weight`, a memory estimate).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def weight_shapes(module: torch.nn.Module | None) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of `module` → the logical shape of that weight."""
    if module is None:
        return {}
    layers = dict(module.named_modules())
    return {key: logical_shape(layers, key, stored) for key, stored in module.state_dict().items()}


def logical_shape(layers: Mapping[str, torch.nn.Module], key: str, stored) -> tuple[int, ...]:
    """The shape the layer computes with for state-dict entry `key` (`layers`: the module's named_modules)."""
    owner, _, name = key.rpartition(".")
    layer = layers.get(owner)
    declared = _linear_geometry(layer, name)
    if declared is not None:
        return declared
    live = getattr(layer, name, None) if layer is not None else None
    shape = live.shape if isinstance(live, torch.Tensor) else getattr(stored, "shape", ())
    return tuple(int(d) for d in shape)


def _linear_geometry(layer, name: str) -> tuple[int, int] | None:
    if name != "weight" or not isinstance(getattr(layer, "weight", None), torch.Tensor):
        return None
    out_features, in_features = getattr(layer, "out_features", None), getattr(layer, "in_features", None)
    if isinstance(out_features, int) and isinstance(in_features, int):
        return out_features, in_features
    return None
