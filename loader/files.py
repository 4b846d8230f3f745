"""Safe reading of LoRA files: a validated safetensors header first, then only the tensors asked for.

Nothing here trusts a file: every length and offset is checked against the file's real size before
anything is allocated, and pickles are only ever opened with torch's weights-only unpickler.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit safetensors itself enforces
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pt2")

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


class LoraFileError(ValueError):
    """A file that cannot be used as a LoRA; the message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{Path(path).name}: {problem}")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Header:
    path: str
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ReadStats:
    """How often tensor data was read from disk (tests count re-reads with it)."""

    files_opened: int = 0
    bytes_read: int = 0


stats = ReadStats()


def file_identity(path: str | os.PathLike) -> tuple[str, int, int]:
    """(real path, size, mtime_ns): changes whenever the file on disk does."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, st.st_size, st.st_mtime_ns


def read_header(path: str | os.PathLike) -> Header:
    """Parse and validate a safetensors header without reading any tensor data."""
    path = str(path)
    if os.path.isdir(path):
        raise LoraFileError(path, "is a folder, not a file")
    size = os.path.getsize(path)
    if size < 8:
        raise LoraFileError(path, f"is {size} bytes long; too short to be a safetensors file")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_HEADER_BYTES:
            raise LoraFileError(path, f"claims a {header_len}-byte header (the limit is {MAX_HEADER_BYTES})")
        if header_len > size - 8:
            raise LoraFileError(
                path, f"claims a {header_len}-byte header but the file has {size - 8} bytes after it "
                "(truncated download?)")
        raw = f.read(header_len)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoraFileError(path, f"has a header that is not valid JSON ({e})") from None
    if not isinstance(parsed, dict):
        raise LoraFileError(path, "has a header that is not a JSON object")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise LoraFileError(path, "has __metadata__ that is not an object")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    data_start = 8 + header_len
    data_size = size - data_start
    tensors = {name: _tensor_info(path, name, entry, data_start, data_size) for name, entry in parsed.items()}
    _check_no_overlap(path, tensors)
    return Header(path=path, tensors=tensors, metadata=metadata)


def _tensor_info(path: str, name: str, entry: object, data_start: int, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise LoraFileError(path, f"tensor {name!r} has a malformed header entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPES:
        raise LoraFileError(path, f"tensor {name!r} has unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise LoraFileError(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
        raise LoraFileError(path, f"tensor {name!r} has invalid data offsets {offsets!r}")
    if offsets[1] > data_size:
        raise LoraFileError(path, f"tensor {name!r} ends at byte {offsets[1]} but the data section has "
                            f"{data_size} bytes (truncated file?)")
    numel = 1
    for d in shape:
        numel *= d
    expected = numel * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
        raise LoraFileError(path, f"tensor {name!r} occupies {offsets[1] - offsets[0]} bytes but its "
                            f"shape {shape} of {dtype} needs {expected}")
    return TensorInfo(dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def _check_no_overlap(path: str, tensors: dict[str, TensorInfo]) -> None:
    spans = sorted((t.start, t.end, name) for name, t in tensors.items() if t.end > t.start)
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end:
            raise LoraFileError(path, f"tensors {a!r} and {b!r} overlap in the file")


def read_tensors(header: Header, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Read the named tensors (all when None) from the file the header came from, in their stored dtype."""
    wanted = list(header.tensors) if names is None else names
    out: dict[str, torch.Tensor] = {}
    stats.files_opened += 1
    with open(header.path, "rb") as f:
        for name in sorted(wanted, key=lambda n: header.tensors[n].start):
            info = header.tensors[name]
            f.seek(info.start)
            raw = bytearray(info.nbytes)
            if f.readinto(raw) != info.nbytes:
                raise LoraFileError(header.path, f"ended while reading tensor {name!r} (file changed on disk?)")
            stats.bytes_read += len(raw)
            dtype = DTYPES[info.dtype]
            tensor = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            out[name] = tensor.reshape(info.shape)
    return out


def read_pickle(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Open a .pt/.ckpt LoRA with torch's weights-only unpickler: it never runs code from the file."""
    stats.files_opened += 1
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler refuses anything but tensors and plain containers
        raise LoraFileError(path, "is a pickle that holds more than plain tensors; it was refused "
                            f"unopened to keep your machine safe ({type(e).__name__}). "
                            "Convert it to .safetensors from a trusted source.") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise LoraFileError(path, f"is a pickle of {type(loaded).__name__}, not a dict of tensors")
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise LoraFileError(path, "holds no tensors")
    return tensors
