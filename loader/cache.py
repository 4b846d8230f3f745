"""LoRA files read once: an in-memory cache keyed by (real path, size, mtime), bounded by bytes.

Re-running a workflow with only a strength changed finds every file here and reads nothing from disk;
a file changed on disk has a new identity and is read again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

import torch

from . import adapters, files, formats

DEFAULT_CACHE_BYTES = int(os.environ.get("LORADECK_CACHE_MB", "2048")) * 1024 * 1024


@dataclass
class LoadedLora:
    """A LoRA file read and understood: header, layout, tensors, and the adapter of each module."""

    path: str
    identity: tuple[str, int, int]
    header: files.Header
    layout: formats.Layout
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @cached_property
    def adapters(self) -> dict[str, adapters.Adapter | adapters.BiasChange]:
        configs = formats.peft_alphas(self.layout.metadata)
        return {
            key: adapters.build(module, self.tensors, configs.get(key.split(".", 1)[0], configs.get("")))
            for key, module in self.layout.modules.items()
        }


def read_lora(path: str) -> LoadedLora:
    identity = files.file_identity(path)
    if path.lower().endswith(files.PICKLE_SUFFIXES):
        tensors = files.read_pickle(path)
        header = files.Header(path, {n: _info_of(t) for n, t in tensors.items()}, {})
    else:
        header = files.read_header(path)
        tensors = files.read_tensors(header)
    return LoadedLora(path, identity, header, formats.describe(header), tensors)


_DTYPE_NAMES = {dtype: name for name, dtype in files.DTYPES.items()}


def _info_of(tensor: torch.Tensor) -> files.TensorInfo:
    return files.TensorInfo(_DTYPE_NAMES.get(tensor.dtype, "F32"), tuple(tensor.shape), 0,
                            tensor.numel() * tensor.element_size())


class LoraCache:
    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int, int], LoadedLora] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, path: str) -> LoadedLora:
        identity = files.file_identity(path)
        with self._lock:
            if identity in self._entries:
                self._entries.move_to_end(identity)
                return self._entries[identity]
        loaded = read_lora(path)
        with self._lock:
            self._entries[loaded.identity] = loaded
            self._evict()
        return loaded

    def _evict(self) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        while total > self.max_bytes and len(self._entries) > 1:
            _, oldest = self._entries.popitem(last=False)
            total -= oldest.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


shared_cache = LoraCache()
