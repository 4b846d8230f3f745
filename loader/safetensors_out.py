"""Writing a .safetensors file tensor by tensor into an open binary file (no second copy of the whole file).

The layout is the format's own: an 8-byte little-endian header length, a JSON header (padded with spaces
to 8 bytes) naming each tensor's dtype, shape and byte range, then the tensors' bytes in that order.
Names are written sorted, so the same tensors and metadata always give the same bytes.
"""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

import torch

from .files import DTYPES

_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def write(f: BinaryIO, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    header: dict[str, object] = {"__metadata__": {str(k): str(v) for k, v in sorted(metadata.items())}}
    offset = 0
    order = sorted(tensors)
    for name in order:
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for name in order:
        tensor = tensors[name].detach().to("cpu").contiguous()
        f.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
