"""LoRA files read once: an in-memory cache keyed by (real path, size, mtime), bounded by bytes.

A file enters with its header only; tensors are read on demand, per module, when a model uses them.
Re-running a workflow with only a strength changed finds every tensor here and reads nothing from disk;
a file changed on disk has a new identity and is read again. One cache is shared by every node.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import torch

from . import adapters, files, formats, split_qkv

DEFAULT_CACHE_BYTES = int(os.environ.get("LORADECK_CACHE_MB", "2048")) * 1024 * 1024


class LoadedLora:
    """A LoRA file understood from its header, with the tensors read so far (on demand, by module).

    Only the modules a model will use are read, straight from the file in their stored dtype; what was
    read stays here for the next run, so the same file in several rows or nodes is read once.
    """

    def __init__(self, path: str, identity: tuple[str, int, int], header: files.Header, layout: formats.Layout,
                 tensors: dict[str, torch.Tensor] | None = None):
        self.path = path
        self.identity = identity
        self.header = header
        self.layout = layout
        self.tensors: dict[str, torch.Tensor] = dict(tensors or {})
        # Tensors holding NaN/inf, found once as each is read (a pass over the data it costs only then).
        self.nonfinite: set[str] = set(files.nonfinite_tensors(self.tensors)) if self.tensors else set()
        self._adapters: dict[str, adapters.Adapter | adapters.BiasChange] = {}
        self._configs = formats.peft_alphas(layout.metadata)
        self._split_qkv_trained = split_qkv.trained_by_sd_scripts(layout.metadata)
        self._lock = threading.Lock()
        self.on_read = None  # set by the cache that holds this file: called after tensors were read

    def __repr__(self) -> str:
        return f"LoadedLora({self.path!r}, {len(self.tensors)}/{len(self.header.tensors)} tensors read)"

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def read(self, names) -> dict[str, torch.Tensor]:
        """The named tensors, reading from the file (one open) only those not read before."""
        with self._lock:
            missing = sorted({n for n in names if n not in self.tensors})
            if missing:
                new = files.read_tensors(self.header, missing)
                self.nonfinite.update(files.nonfinite_tensors(new))
                self.tensors.update(new)
        if missing and self.on_read is not None:
            self.on_read(self)
        return {n: self.tensors[n] for n in names}

    def adapters_for(self, module_keys) -> dict[str, adapters.Adapter | adapters.BiasChange]:
        """The adapter of each named module, reading only the tensors those modules need.

        LoraFileError when one of those tensors holds NaN/inf (unless the user opted in; checked on every
        call, so opting out again refuses a cached file) or a module's tensors are unusable by its math.
        """
        wanted = [k for k in module_keys if k not in self._adapters]
        if wanted:
            modules = [self.layout.modules[k] for k in wanted]
            tensors = self.read([name for m in modules for name in m.parts.values()])
            for module in modules:
                config = self._configs.get(module.key.split(".", 1)[0], self._configs.get(""))
                self._adapters[module.key] = _build(self.path, module, tensors, config, self._split_qkv_trained)
        if self.nonfinite:
            used = {name for k in module_keys for name in self.layout.modules[k].parts.values()}
            files.refuse_nonfinite(self.path, sorted(used & self.nonfinite))
        return {k: self._adapters[k] for k in module_keys}

    @property
    def adapters(self) -> dict[str, adapters.Adapter | adapters.BiasChange]:
        """Every module's adapter (reads every adapter tensor of the file)."""
        return self.adapters_for(list(self.layout.modules))


def _build(path: str, module: formats.Module, tensors: dict[str, torch.Tensor], config, split_qkv_trained: bool):
    try:
        return adapters.build(module, tensors, config, split_qkv_trained)
    except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as e:  # shapes its math cannot use
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise files.LoraFileError(path, f"module {module.key!r} ({module.kind}) cannot be used: {reason}") from None


def read_lora(path: str) -> LoadedLora:
    """The file's header and layout; tensor data is read later, per module, when a model needs it."""
    identity = files.file_identity(path)
    if path.lower().endswith(files.PICKLE_SUFFIXES):
        tensors = files.read_pickle(path)  # a pickle cannot be read in parts
        header = files.Header(path, {n: _info_of(t) for n, t in tensors.items()}, {})
        return LoadedLora(path, identity, header, formats.describe(header), tensors)
    header = files.read_header(path)
    return LoadedLora(path, identity, header, formats.describe(header))


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
        loaded.on_read = self._trim
        with self._lock:
            self._entries[loaded.identity] = loaded
        if loaded.tensors:
            self._trim(loaded)
        return loaded

    def _trim(self, grown: LoadedLora) -> None:
        """Drop the least recently used files (never the one just read) until the tensors fit the bound."""
        with self._lock:
            total = sum(e.nbytes for e in self._entries.values())
            for identity in list(self._entries):
                if total <= self.max_bytes:
                    break
                entry = self._entries[identity]
                if entry is not grown:
                    del self._entries[identity]
                    total -= entry.nbytes

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


shared_cache = LoraCache()
