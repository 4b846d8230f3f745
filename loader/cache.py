"""LoRA files read once: an in-memory cache keyed by file version (loader/versions.py), bounded by bytes.

A file enters with its header only; tensors are read on demand, per module, when a model uses them.
Re-running a workflow with only a strength changed finds every tensor here and reads no tensor data;
a file changed on disk is a new version and is read again, and the old version is dropped. A file that
changes after its header was read is never read through the old header's offsets: `LoraCache.use` reads
it again from the start. One cache is shared by every node and by the server's route threads: every
structure here is guarded by a lock, and the byte bound is a running count.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import torch

from . import adapter_types, control_lora, files, formats, peft_config, split_qkv, versions

DEFAULT_CACHE_BYTES = int(os.environ.get("LORADECK_CACHE_MB", "2048")) * 1024 * 1024


class LoadedLora:
    """A LoRA file understood from its header, with the tensors read so far (on demand, by module).

    Only the modules a model will use are read, straight from the file in their stored dtype; what was
    read stays here for the next run, so the same file in several rows or nodes is read once.
    """

    def __init__(self, path: str, identity: versions.FileVersion, header: files.Header, layout: formats.Layout,
                 tensors: dict[str, torch.Tensor] | None = None):
        self.path = path
        self.identity = identity
        self.header = header
        self.layout = layout
        self.tensors: dict[str, torch.Tensor] = dict(tensors or {})
        self._nbytes = sum(_size(t) for t in self.tensors.values())
        # Tensors holding NaN/inf, found once as each is read (a pass over the data it costs only then).
        self.nonfinite: set[str] = set(files.nonfinite_tensors(self.tensors)) if self.tensors else set()
        self._adapters: dict[str, adapter_types.Adapter | adapter_types.BiasChange] = {}
        self._configs = peft_config.peft_alphas(layout.metadata)
        self._split_qkv_trained = split_qkv.trained_by_sd_scripts(layout.metadata)
        self._control = control_lora.is_bfl_control(header.tensors)
        self._lock = threading.RLock()
        self.on_read = None  # set by the cache that holds this file: called with the bytes just read

    def __repr__(self) -> str:
        return f"LoadedLora({self.path!r}, {len(self.tensors)}/{len(self.header.tensors)} tensors read)"

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def read(self, names) -> dict[str, torch.Tensor]:
        """The named tensors, reading from the file (one open) only those not read before.

        files.FileChangedError when the file on disk is no longer this version (LoraCache.use reads it again).
        """
        with self._lock:
            missing = sorted({n for n in names if n not in self.tensors})
            added = 0
            if missing:
                new = files.read_tensors(self.header, missing)
                self.nonfinite.update(files.nonfinite_tensors(new))
                self.tensors.update(new)
                added = sum(_size(t) for t in new.values())
                self._nbytes += added
            found = {n: self.tensors[n] for n in names}
        if added and self.on_read is not None:
            self.on_read(self, added)
        return found

    def adapters_for(self, module_keys) -> dict[str, adapter_types.Adapter | adapter_types.BiasChange]:
        """The adapter of each named module, reading only the tensors those modules need.

        LoraFileError when one of those tensors holds NaN/inf (unless the user opted in; checked on every
        call, so opting out again refuses a cached file) or a module's tensors are unusable by its math.
        """
        with self._lock:  # route threads and the prompt worker may ask for one file's adapters at once
            wanted = [k for k in module_keys if k not in self._adapters]
            if wanted:
                modules = [self.layout.modules[k] for k in wanted]
                tensors = self.read([name for m in modules for name in m.parts.values()])
                for module in modules:
                    config = self._configs.get(module.key.split(".", 1)[0], self._configs.get(""))
                    self._adapters[module.key] = _build(self.path, module, tensors, config, self._split_qkv_trained,
                                                          self._control)
            if self.nonfinite:
                used = {name for k in module_keys for name in self.layout.modules[k].parts.values()}
                files.refuse_nonfinite(self.path, sorted(used & self.nonfinite))
            return {k: self._adapters[k] for k in module_keys}

    @property
    def adapters(self) -> dict[str, adapter_types.Adapter | adapter_types.BiasChange]:
        """Every module's adapter (reads every adapter tensor of the file)."""
        return self.adapters_for(list(self.layout.modules))


def _build(path: str, module: formats.Module, tensors: dict[str, torch.Tensor], config, split_qkv_trained: bool,
           control: bool = False):
    try:
        return adapter_types.build(module, tensors, config, split_qkv_trained, control)
    except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as e:  # shapes its math cannot use
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise files.LoraFileError(path, f"module {module.key!r} ({module.kind}) cannot be used: {reason}") from None


def read_lora(path: str) -> LoadedLora:
    """The file's header and layout; tensor data is read later, per module, when a model needs it."""
    if path.lower().endswith(files.PICKLE_SUFFIXES):
        version = files.file_identity(path)
        tensors = files.read_pickle(path)  # a pickle cannot be read in parts
        if files.file_identity(path) != version:
            raise files.FileChangedError(path)
        header = files.Header(path, {n: _info_of(t) for n, t in tensors.items()}, {}, version)
        return LoadedLora(path, version, header, formats.describe(header), tensors)
    header = files.read_header(path)
    return LoadedLora(path, header.version, header, formats.describe(header))


def _size(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


_DTYPE_NAMES = {dtype: name for name, dtype in files.DTYPES.items()}


def _info_of(tensor: torch.Tensor) -> files.TensorInfo:
    return files.TensorInfo(_DTYPE_NAMES.get(tensor.dtype, "F32"), tuple(tensor.shape), 0,
                            tensor.numel() * tensor.element_size())


class LoraCache:
    """Files by version, least recently used first; the tensors they hold stay within `max_bytes`
    (a single file bigger than that is held alone while it is used)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[versions.FileVersion, LoadedLora] = OrderedDict()
        # Bytes counted per held entry, changed only under the lock: the running total is their exact sum even
        # while an entry's own count moves on in a reading thread.
        self._counted: dict[LoadedLora, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def load(self, path: str) -> LoadedLora:
        """The file as it is on disk now: a cached entry of this very version, or read afresh."""
        version = files.file_identity(path)
        with self._lock:
            if version in self._entries:
                self._entries.move_to_end(version)
                return self._entries[version]
        loaded = read_lora(path)
        with self._lock:
            for stale in [e for v, e in self._entries.items() if v.path == loaded.identity.path]:
                self._drop_locked(stale)  # an older version of this path is never used again
            held = self._entries.setdefault(loaded.identity, loaded)
            if held is loaded:
                loaded.on_read = self._grown
                self._counted[loaded] = loaded.nbytes
                self._bytes += loaded.nbytes
            self._entries.move_to_end(loaded.identity)
            self._trim_locked(held)
        return held

    def use(self, path: str, work):
        """work(loaded) on the file as it is on disk. A file that changes while work reads it is read again
        from its header and work starts over, so no result mixes two versions; a file that keeps changing
        is refused with a clear message."""
        for _ in range(3):
            loaded = self.load(path)
            try:
                return work(loaded)
            except files.FileChangedError:
                self.forget(loaded)
        raise files.LoraFileError(path, "keeps changing on disk while it is read; wait until it is completely "
                                  "written and run again")

    def forget(self, loaded: LoadedLora) -> None:
        with self._lock:
            self._drop_locked(loaded)

    def _drop_locked(self, loaded: LoadedLora) -> None:
        if self._entries.get(loaded.identity) is loaded:
            del self._entries[loaded.identity]
            loaded.on_read = None
            self._bytes -= self._counted.pop(loaded)

    def _grown(self, entry: LoadedLora, added: int) -> None:
        with self._lock:  # counted and trimmed at once: no thread ever sees the bound exceeded by another's read
            if self._entries.get(entry.identity) is not entry:
                return  # evicted while it was read: its bytes are no longer held here
            self._counted[entry] += added
            self._bytes += added
            self._trim_locked(entry)

    def _trim_locked(self, grown: LoadedLora) -> None:
        """Drop the least recently used files (never the one just read) until the tensors fit the bound."""
        for entry in list(self._entries.values()):
            if self._bytes <= self.max_bytes:
                break
            if entry is not grown:
                self._drop_locked(entry)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            for entry in list(self._entries.values()):
                self._drop_locked(entry)


shared_cache = LoraCache()
