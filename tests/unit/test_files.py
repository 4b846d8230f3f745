"""The safetensors reader: headers validated before any allocation, tensors read in their stored dtype."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from loader import files


def write_raw(path, header: dict, data: bytes = b"") -> str:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


def test_header_and_tensors_round_trip(tmp_path):
    tensors = {"a.lora_down.weight": torch.randn(4, 8), "a.lora_up.weight": torch.randn(8, 4).half(),
               "a.alpha": torch.tensor(2.0, dtype=torch.bfloat16)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata={"ss_network_dim": "4"})
    header = files.read_header(path)
    assert header.metadata == {"ss_network_dim": "4"}
    assert header.tensors["a.lora_up.weight"].dtype == "F16" and header.tensors["a.lora_up.weight"].shape == (8, 4)
    read = files.read_tensors(header, ["a.lora_up.weight", "a.alpha"])
    assert set(read) == {"a.lora_up.weight", "a.alpha"}
    assert read["a.lora_up.weight"].dtype == torch.float16
    assert torch.equal(read["a.lora_up.weight"], tensors["a.lora_up.weight"])
    assert read["a.alpha"].item() == 2.0


@pytest.mark.parametrize(("header", "data", "message"), [
    ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
    ({"t": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unsupported dtype 'Q4'"),
    ({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12"),
    ({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}, b"\0" * 8, "invalid shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
    ({"t": [1, 2]}, b"", "malformed header entry"),
])
def test_bad_headers_are_named(tmp_path, header, data, message):
    path = write_raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(files.LoraFileError, match=message) as error:
        files.read_header(path)
    assert str(error.value).startswith("bad.safetensors: ")


def test_header_claims_are_checked_before_reading(tmp_path):
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 50 * 1024**3) + b"{}")
    with pytest.raises(files.LoraFileError, match="header"):
        files.read_header(huge)
    longer = tmp_path / "longer.safetensors"
    longer.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(files.LoraFileError, match="truncated download"):
        files.read_header(longer)


@pytest.mark.parametrize(("content", "message"), [(b"", "too short"), (b"\x02\0\0\0\0\0\0\0[]", "not a JSON object"),
                                                  (b"\x02\0\0\0\0\0\0\0{x", "not valid JSON")])
def test_not_safetensors(tmp_path, content, message):
    path = tmp_path / "odd.safetensors"
    path.write_bytes(content)
    with pytest.raises(files.LoraFileError, match=message):
        files.read_header(path)


def test_folder_named_like_a_file(tmp_path):
    (tmp_path / "x.safetensors").mkdir()
    with pytest.raises(files.LoraFileError, match="is a folder"):
        files.read_header(tmp_path / "x.safetensors")


def test_pickles_open_weights_only(tmp_path):
    good = tmp_path / "old.pt"
    torch.save({"a.lora_down.weight": torch.ones(2, 3)}, good)
    assert torch.equal(files.read_pickle(good)["a.lora_down.weight"], torch.ones(2, 3))

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"x": Payload()}, evil)
    with pytest.raises(files.LoraFileError, match="refused unopened"):
        files.read_pickle(evil)
