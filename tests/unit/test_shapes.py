"""Logical weight shapes of layers whose storage holds another layout (loader.shapes), without the host.

Two ways a layer packs, as the hosts' quantized layers do: a tensor subclass that reports its logical shape
while its state dict holds the bytes (GGUF's GGMLTensor), and plain packed storage in a linear layer that
dequantizes in its own code (the host's convert_weight protocol). The packed sizes are Q8_0's (34 bytes / 32).
"""

from __future__ import annotations

import torch

from loader.shapes import weight_shapes


class LogicalShapeTensor(torch.Tensor):
    """Packed bytes that say which weight they hold, as GGUF's GGMLTensor does."""

    @staticmethod
    def __new__(cls, data, logical_shape):
        return torch.Tensor._make_subclass(cls, data)

    def __init__(self, data, logical_shape):
        self.logical_shape = torch.Size(logical_shape)

    @property
    def shape(self):
        return getattr(self, "logical_shape", self.size())


class PackedStateDict(torch.nn.Module):
    """A layer whose state dict reports the storage (bytes), not the weight."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(LogicalShapeTensor(torch.zeros(8, 34, dtype=torch.uint8), (8, 32)),
                                         requires_grad=False)
        self.weight.logical_shape = torch.Size((8, 32))  # (a Parameter of a subclass is a detached copy)
        self.norm = torch.nn.LayerNorm(8)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = torch.zeros(tuple(self.weight.size()), dtype=torch.uint8)


def packed_linear() -> torch.nn.Linear:
    layer = torch.nn.Linear(64, 16)
    layer.weight = torch.nn.Parameter(torch.zeros(16, 68, dtype=torch.uint8), requires_grad=False)
    return layer


def test_shapes_come_from_the_layer_not_the_storage():
    model = torch.nn.ModuleDict({"gguf_like": PackedStateDict(), "packed": packed_linear(),
                                 "plain": torch.nn.Conv2d(4, 8, 3)})
    stored = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert stored["gguf_like.weight"] == (8, 34) and stored["packed.weight"] == (16, 68)
    shapes = weight_shapes(model)
    assert shapes["gguf_like.weight"] == (8, 32)  # the tensor's own logical shape
    assert shapes["packed.weight"] == (16, 64)  # the linear layer's (out_features, in_features)
    assert shapes["packed.bias"] == (16,) and shapes["gguf_like.norm.weight"] == (8,)
    assert shapes["plain.weight"] == (8, 4, 3, 3)
    assert set(shapes) == set(stored)


def test_entries_that_are_no_tensor_of_the_module_keep_their_stored_shape():
    class WithEstimate(torch.nn.Linear):
        def _save_to_state_dict(self, destination, prefix, keep_vars):
            super()._save_to_state_dict(destination, prefix, keep_vars)
            destination[prefix + "temp.weight"] = torch.empty(3, 5, device="meta")  # GGUF's memory estimate

    assert weight_shapes(torch.nn.Sequential(WithEstimate(4, 2)))["0.temp.weight"] == (3, 5)
    assert weight_shapes(None) == {}
