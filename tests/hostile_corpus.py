"""A corpus of hostile LoRA files, made at test time (no binary fixtures are committed).

Each case writes one bad file into a folder and names the problem our message must state. The same
corpus feeds the unit tests (the reader alone) and the integration tests (the nodes in the real host).
`sd15_module` is one real module of the host's miniature SD1 model, so a well-formed file built from it
loads; every case breaks exactly one thing about such a file.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save

# attn2.to_k of the first transformer block of the miniature SD1 UNet: [model_channels 32, context_dim 64].
SD15_MODULE = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k"
SD15_OUT, SD15_IN, RANK = 32, 64, 4


def good_tensors(module: str = SD15_MODULE, out_features: int = SD15_OUT, in_features: int = SD15_IN,
                 rank: int = RANK, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        f"{module}.lora_down.weight": torch.randn(rank, in_features, generator=generator) * 0.1,
        f"{module}.lora_up.weight": torch.randn(out_features, rank, generator=generator) * 0.1,
        f"{module}.alpha": torch.tensor(float(rank)),
    }


def good_bytes(**kwargs) -> bytes:
    return save(good_tensors(**kwargs))


def safetensors_bytes(header: object, data: bytes = b"", header_len: int | None = None) -> bytes:
    """A file with this header (a JSON value, or raw bytes), an optional lying length, then `data`."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if header_len is None else header_len
    return struct.pack("<Q", length) + raw + data


def entry(dtype: str = "F32", shape: list | None = None, offsets: list | None = None) -> dict:
    shape = [2, 2] if shape is None else shape
    return {"dtype": dtype, "shape": shape, "data_offsets": [0, 16] if offsets is None else offsets}


def _truncated(path: Path) -> None:
    data = good_bytes()
    path.write_bytes(data[: len(data) - 100])


def _truncated_in_header(path: Path) -> None:
    path.write_bytes(good_bytes()[:40])


def _directory(path: Path) -> None:
    path.mkdir()


def _nonfinite(path: Path) -> None:
    tensors = good_tensors()
    tensors[f"{SD15_MODULE}.lora_up.weight"][3, 1] = float("nan")
    tensors[f"{SD15_MODULE}.lora_down.weight"][0, 0] = float("-inf")
    path.write_bytes(save(tensors))


def _two_styles(path: Path) -> None:
    tensors = good_tensors()
    other = good_tensors(seed=1)
    tensors[f"{SD15_MODULE}.lora_A.weight"] = other[f"{SD15_MODULE}.lora_down.weight"]
    tensors[f"{SD15_MODULE}.lora_B.weight"] = other[f"{SD15_MODULE}.lora_up.weight"]
    path.write_bytes(save(tensors))


def _adapter_math_refuses(path: Path) -> None:
    # IA³ whose on_input flag holds no value: the header is sound, the adapter's math cannot use it.
    path.write_bytes(save({f"{SD15_MODULE}.weight": torch.ones(SD15_OUT), f"{SD15_MODULE}.on_input": torch.ones(0)}))


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], None]
    problem: str  # a regular expression the message must match after "<file name>: "

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / f"{self.name}.safetensors"
        self.make(path)
        return path


_OVERLAP = {"a": entry(offsets=[0, 16]), "b": entry(offsets=[8, 24])}

# Files whose header alone is wrong: the reader refuses them before reading any tensor data.
HEADER_CASES = [
    Case("zero_bytes", _bytes(b""), r"is 0 bytes long; too short to be a safetensors file"),
    Case("truncated_in_header", _truncated_in_header, r"claims a \d+-byte header but the file has 32 bytes"),
    Case("header_longer_than_file", _bytes(safetensors_bytes({}, b"", header_len=4096)),
         r"claims a 4096-byte header but the file has 2 bytes after it \(truncated download\?\)"),
    Case("multi_gigabyte_header", _bytes(safetensors_bytes(b"{}", b"", header_len=8 * 1024**3)),
         r"claims a 8589934592-byte header \(the limit is 104857600\)"),
    Case("header_not_json", _bytes(safetensors_bytes(b"{not json", b"")), r"has a header that is not valid JSON"),
    Case("header_not_utf8", _bytes(safetensors_bytes(b'{"\xff\xfe": 1}', b"")), r"has a header that is not valid JSON"),
    Case("header_is_a_list", _bytes(safetensors_bytes([1, 2, 3])), r"has a header that is not a JSON object"),
    Case("header_deeply_nested", _bytes(safetensors_bytes(b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}")),
         r"has a header nested too deeply"),
    Case("header_memory_bomb_lists", _bytes(safetensors_bytes(b'{"a":[' + b"[]," * 500_000 + b"[]]}")),
         r"has a header of 500003 objects and lists with 500000 items; far more than any LoRA has"),
    Case("header_memory_bomb_items", _bytes(safetensors_bytes(b'{"a":[' + b"0," * 4_000_001 + b"0]}")),
         r"has a header of 2 objects and lists with 4000001 items; far more than any LoRA has"),
    Case("header_duplicate_name", _bytes(safetensors_bytes(
        b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
        b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', b"\0" * 8)),
        r"has a header that names 'a' twice"),
    Case("entry_not_object", _bytes(safetensors_bytes({"a": [1, 2]}, b"\0" * 16)),
         r"tensor 'a' has a malformed header entry"),
    Case("overlapping_offsets", _bytes(safetensors_bytes(_OVERLAP, b"\0" * 24)),
         r"tensors 'a' and 'b' overlap in the file"),
    Case("offsets_past_end", _bytes(safetensors_bytes({"a": entry(offsets=[16, 32])}, b"\0" * 20)),
         r"tensor 'a' ends at byte 32 but the data section has 20 bytes \(truncated file\?\)"),
    Case("offsets_reversed", _bytes(safetensors_bytes({"a": entry(offsets=[16, 0])}, b"\0" * 16)),
         r"tensor 'a' has invalid data offsets \[16, 0\]"),
    Case("offsets_negative", _bytes(safetensors_bytes({"a": entry(offsets=[-16, 0])}, b"\0" * 16)),
         r"tensor 'a' has invalid data offsets \[-16, 0\]"),
    Case("size_not_shape", _bytes(safetensors_bytes({"a": entry(shape=[3, 3])}, b"\0" * 16)),
         r"tensor 'a' occupies 16 bytes but its shape \[3, 3\] of F32 needs 36"),
    Case("unknown_dtype", _bytes(safetensors_bytes({"a": entry(dtype="Q4_K")}, b"\0" * 16)),
         r"tensor 'a' has unsupported dtype 'Q4_K'"),
    Case("dtype_not_text", _bytes(safetensors_bytes({"a": entry(dtype=["F32"])}, b"\0" * 16)),
         r"tensor 'a' has unsupported dtype \['F32'\]"),
    Case("shape_too_many_dims", _bytes(safetensors_bytes({"a": entry(shape=[1] * 100, offsets=[0, 4])}, b"\0" * 4)),
         r"tensor 'a' has an invalid shape \[1, 1, "),
    Case("shape_overflows", _bytes(safetensors_bytes({"a": entry(shape=[0, 2**70], offsets=[0, 0])}, b"")),
         r"tensor 'a' has an invalid shape \[0, 1180591620717411303424\]"),
]

# Files with a sound header whose contents are wrong for a LoRA.
CONTENT_CASES = [
    Case("truncated", _truncated, r"tensor '.+' ends at byte \d+ but the data section has \d+ bytes"),
    Case("nonfinite", _nonfinite,
         r"has NaN or infinite values in 2 tensor\(s\), e\.g\. '.+'; .*Set LORADECK_ALLOW_NONFINITE=1"),
    Case("two_styles", _two_styles,
         rf"module '{SD15_MODULE}' is given twice: '{SD15_MODULE}\.lora_(A|down)\.weight' and "
         rf"'{SD15_MODULE}\.lora_(A|down)\.weight'"),
    Case("adapter_math_refuses", _adapter_math_refuses,
         rf"module '{SD15_MODULE}' \(ia3\) cannot be used: a Tensor with 0 elements cannot be converted to Scalar"),
]

DIRECTORY_CASE = Case("folder", _directory, r"is a folder, not a file")


class Canary:
    """Something a malicious pickle would do if it ran: create a file and set an environment variable."""

    def __init__(self, folder: str | os.PathLike):
        self.file = Path(folder) / "canary-was-here"
        self.env = "LORADECK_CANARY"

    def fired(self) -> bool:
        return self.file.exists() or self.env in os.environ


class _RunsCode:
    """Pickles to a call of exec() with code that would trip the canary."""

    def __init__(self, canary: Canary):
        self.code = (f"import os; open({str(canary.file)!r}, 'w').write('pwned'); "
                     f"os.environ[{canary.env!r}] = '1'")

    def __reduce__(self):
        return exec, (self.code,)


def evil_pickles(folder: str | os.PathLike, canary: Canary) -> list[Path]:
    """The same code-running payload in each pickle shape torch.load reads: zip archive, legacy, plain pickle."""
    import pickle

    folder = Path(folder)
    payload = {"lora_unet_x.lora_down.weight": torch.ones(2, 2), "evil": _RunsCode(canary)}
    made = []
    path = folder / "evil_zip.ckpt"
    torch.save(payload, path)
    made.append(path)
    path = folder / "evil_legacy.pt"
    torch.save(payload, path, _use_new_zipfile_serialization=False)
    made.append(path)
    path = folder / "evil_plain.pt"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    made.append(path)
    path = folder / "evil_state_dict.pth"
    torch.save({"state_dict": _RunsCode(canary)}, path)
    made.append(path)
    return made
