"""Safe reading of LoRA files: a validated safetensors header first, then only the tensors asked for.

Nothing here trusts a file: every length and offset is checked against the file's real size before
anything is allocated, and pickles are only ever opened with torch's weights-only unpickler.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import stat
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import versions

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit safetensors itself enforces
MAX_TENSORS = 100_000  # real LoRAs hold a few thousand; full checkpoints about 3000
# Python's JSON objects cost up to ~20× the text they come from. A header has a few containers per tensor
# and a few separators per value; far more than that is a memory bomb, refused before parsing.
MAX_HEADER_CONTAINERS = 4 * MAX_TENSORS
MAX_HEADER_SEPARATORS = 4_000_000
MAX_DIMS = 8  # LoRA tensors have at most 4; torch refuses more than 64
MAX_DIM = 2**53  # every real dimension is far below; larger ones overflow torch's int64 shapes
ALLOW_NONFINITE_ENV = "LORADECK_ALLOW_NONFINITE"
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


class FileChangedError(LoraFileError):
    """The file on disk is no longer the version read before; reading it again from its header is safe."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, "changed on disk while it was being read; wait until it is completely written "
                         "and run again")


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
    version: versions.FileVersion | None = None  # the file version the header was read from


@dataclass
class ReadStats:
    """How often tensor data was read from disk (tests count re-reads with it)."""

    files_opened: int = 0
    bytes_read: int = 0


stats = ReadStats()


def file_identity(path: str | os.PathLike) -> versions.FileVersion:
    """The version of the file now on disk (loader/versions.py): every cache of the pack keys by it."""
    real = os.path.realpath(path)
    _regular_file_size(real)
    with _open(real) as f:
        return _version_of(real, f)


def _version_of(real: str, f) -> versions.FileVersion:
    try:
        return versions.of_open_file(real, f)
    except versions.FileChanged:
        raise FileChangedError(real) from None
    except OSError as e:
        raise LoraFileError(real, f"cannot be read ({e.strerror or e})") from None


def read_header(path: str | os.PathLike) -> Header:
    """Parse and validate a safetensors header without reading any tensor data."""
    path = str(path)
    size = _regular_file_size(path)
    if size < 8:
        raise LoraFileError(path, f"is {size} bytes long; too short to be a safetensors file")
    with _open(path) as f:
        version = _version_of(os.path.realpath(path), f)
        size = version.size
        f.seek(0)
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_HEADER_BYTES:
            raise LoraFileError(path, f"claims a {header_len}-byte header (the limit is {MAX_HEADER_BYTES})")
        if header_len > size - 8:
            raise LoraFileError(
                path, f"claims a {header_len}-byte header but the file has {size - 8} bytes after it "
                "(truncated download?)")
        raw = f.read(header_len)
        _unchanged_since(version, f, versions.check_stat_unchanged)
    parsed = _parse_json(path, raw)
    if not isinstance(parsed, dict):
        raise LoraFileError(path, "has a header that is not a JSON object")
    if len(parsed) > MAX_TENSORS + 1:
        raise LoraFileError(path, f"lists {len(parsed)} tensors; the limit is {MAX_TENSORS}")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise LoraFileError(path, "has __metadata__ that is not an object")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    data_start = 8 + header_len
    data_size = size - data_start
    tensors = {name: _tensor_info(path, name, entry, data_start, data_size) for name, entry in parsed.items()}
    _check_no_overlap(path, tensors)
    return Header(path=path, tensors=tensors, metadata=metadata, version=version)


def _unchanged_since(version: versions.FileVersion | None, f, check) -> None:
    """FileChangedError when the open file is no longer `version`; callers read it again from its header."""
    if version is None:
        return
    try:
        check(version, f)
    except versions.FileChanged:
        raise FileChangedError(version.path) from None


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise LoraFileError(path, "does not exist (moved or deleted?)") from None
    except OSError as e:
        raise LoraFileError(path, f"cannot be read ({e.strerror or e})") from None


def _regular_file_size(path: str) -> int:
    # A folder, pipe or device named like a LoRA would block or fail deep inside a reader: say so first.
    st = _stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise LoraFileError(path, "is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise LoraFileError(path, "is not a regular file")
    return st.st_size


def _open(path: str):
    try:
        return open(path, "rb")
    except OSError as e:
        raise LoraFileError(path, f"cannot be read ({e.strerror or e})") from None


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return result


def _parse_json(path: str, raw: bytes) -> object:
    if not raw.lstrip(b" \t\r\n").startswith(b"{"):
        raise LoraFileError(path, "has a header that is not a JSON object")
    containers = raw.count(b"{") + raw.count(b"[")
    separators = raw.count(b",")
    if containers > MAX_HEADER_CONTAINERS or separators > MAX_HEADER_SEPARATORS:
        raise LoraFileError(path, f"has a header of {containers} objects and lists with {separators} items; "
                            "far more than any LoRA has (refused before parsing it)")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        # Two readers could pick different entries for one name; neither is trusted.
        raise LoraFileError(path, f"has a header that names {e.args[0]!r} twice") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoraFileError(path, f"has a header that is not valid JSON ({e})") from None
    except RecursionError:
        raise LoraFileError(path, "has a header nested too deeply to be a safetensors header") from None
    except ValueError:  # e.g. an integer with thousands of digits
        raise LoraFileError(path, "has a header with a number too long to read") from None


def _tensor_info(path: str, name: str, entry: object, data_start: int, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise LoraFileError(path, f"tensor {name!r} has a malformed header entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise LoraFileError(path, f"tensor {name!r} has unsupported dtype {_short(dtype)}")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(_is_int(d) and 0 <= d < MAX_DIM for d in shape)):
        raise LoraFileError(path, f"tensor {name!r} has an invalid shape {_short(shape)}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
        raise LoraFileError(path, f"tensor {name!r} has invalid data offsets {_short(offsets)}")
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_no_overlap(path: str, tensors: dict[str, TensorInfo]) -> None:
    spans = sorted((t.start, t.end, name) for name, t in tensors.items() if t.end > t.start)
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end:
            raise LoraFileError(path, f"tensors {a!r} and {b!r} overlap in the file")


def read_tensors(header: Header, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Read the named tensors (all when None) from the file the header came from, in their stored dtype.

    FileChangedError when the file on disk is no longer the version the header was read from (checked
    before and after reading): the offsets of one version never read the bytes of another.
    """
    wanted = list(header.tensors) if names is None else names
    out: dict[str, torch.Tensor] = {}
    stats.files_opened += 1
    with _open(header.path) as f:
        _unchanged_since(header.version, f, versions.check_unchanged)
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
        _unchanged_since(header.version, f, versions.check_stat_unchanged)
    return out


def read_pickle(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Open a .pt/.ckpt LoRA with torch's weights-only unpickler: it never runs code from the file."""
    path = str(path)
    size = _regular_file_size(path)
    _check_archive_sizes(path, size)
    stats.files_opened += 1
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met something other than tensors
        code = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f"would call {code.group(1)}" if code else "holds more than plain tensors"
        raise LoraFileError(path, f"is a pickle that {what}; it was refused unopened to keep your machine "
                            "safe. Convert it to .safetensors from a trusted source.") from None
    except Exception as e:  # damaged archives, truncated data, impossible storage sizes
        raise LoraFileError(path, "is not a readable PyTorch file "
                            f"(damaged or truncated? {type(e).__name__})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise LoraFileError(path, f"is a pickle of {type(loaded).__name__}, not a dict of tensors")
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise LoraFileError(path, "holds no tensors")
    return tensors


def _check_archive_sizes(path: str, size: int) -> None:
    # torch saves its zip archives uncompressed; members that unpack to more than the file holds are a
    # zip bomb that would be allocated before any check of ours could run.
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise LoraFileError(path, f"is a damaged archive ({e})") from None
    if unpacked > size:
        raise LoraFileError(path, f"is an archive that unpacks to {unpacked} bytes from {size}; refused")


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or ±inf (one pass over the data)."""
    bad = []
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        if tensor.element_size() == 1:  # float8 has no isfinite kernel on CPU
            tensor = tensor.to(torch.float16)
        elif tensor.dtype == torch.float64:  # the math runs in fp32: 1e300 is finite here, inf there
            tensor = tensor.to(torch.float32)
        # A finite fp32 sum proves every element finite (NaN and ±inf propagate); only a non-finite sum,
        # which a huge but finite tensor can also give, needs the exact element-wise check.
        if torch.isfinite(tensor.sum(dtype=torch.float32)) or bool(torch.isfinite(tensor).all()):
            continue
        bad.append(name)
    return bad


def nonfinite_allowed() -> bool:
    return os.environ.get(ALLOW_NONFINITE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def refuse_nonfinite(path: str | os.PathLike, nonfinite: list[str] | tuple[str, ...]) -> None:
    """LoraFileError when tensors hold NaN or ±inf, unless the user opted in with LORADECK_ALLOW_NONFINITE=1."""
    if nonfinite and not nonfinite_allowed():
        raise LoraFileError(path, f"has NaN or infinite values in {len(nonfinite)} tensor(s), e.g. {nonfinite[0]!r}; "
                            "it would turn the model's output into noise or black images. "
                            f"Set {ALLOW_NONFINITE_ENV}=1 to load it anyway.")
