"""Fuzzing with hypothesis: whatever the bytes or the workflow values, the only failure is our clear error.

Profiles (tests/conftest.py): `ci` runs 1000 derandomised cases per test; LORADECK_FUZZ=long (`make fuzz`)
runs 50 000 random ones. Properties:
- the reader either returns a header whose every tensor then reads back with its declared dtype and
  shape, or raises LoraFileError; never another exception, never a hang;
- whatever safetensors itself accepts, we accept, with identical tensors (differential);
- a file that reads is understood (layout, adapters) or refused with LoraFileError;
- names either normalise to a relative path without parent steps, or raise LoraNameError;
- rows either parse to finite, in-range strengths, or raise StackError.
Each property also runs on a valid input (@example), so its accepting side is checked every time.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import struct
import tempfile
import time

import hostile_corpus as corpus
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load

from loader import cache, files, names, plan, stack

_folder = tempfile.mkdtemp(prefix="loradeck-fuzz-")
_counter = itertools.count()
MAX_SECONDS = 5.0  # per case; the files are at most a few hundred bytes (a header may claim far more)
SMALL_VALID = __import__("safetensors.torch").torch.save({"w": torch.arange(6, dtype=torch.float16).reshape(2, 3)})


def _write(data: bytes, suffix: str = ".safetensors") -> str:
    path = os.path.join(_folder, f"case{next(_counter) % 64}{suffix}")
    with open(path, "wb") as f:
        f.write(data)
    return path


def _read_everything(data: bytes) -> dict[str, torch.Tensor] | None:
    """The tensors when the file is accepted, None when it is refused with LoraFileError."""
    path = _write(data)
    started = time.perf_counter()
    try:
        header = files.read_header(path)
        tensors = files.read_tensors(header)
    except files.LoraFileError as e:
        assert str(e).startswith(os.path.basename(path) + ": ")
        return None
    finally:
        assert time.perf_counter() - started < MAX_SECONDS
    assert set(tensors) == set(header.tensors)
    for name, info in header.tensors.items():
        assert tuple(tensors[name].shape) == info.shape
        assert tensors[name].dtype == files.DTYPES[info.dtype]
    return tensors


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
DTYPE_NAMES = [*files.DTYPES, "F4", "U16", "U32", "U64", "F8_E8M0", "f32", ""]
SMALL_INT = st.integers(min_value=-2, max_value=40)
ANY_INT = SMALL_INT | st.integers(min_value=-(2**70), max_value=2**70)
ENTRY = st.fixed_dictionaries(
    {"dtype": st.sampled_from(DTYPE_NAMES) | JSON,
     "shape": st.lists(SMALL_INT | ANY_INT, max_size=5) | JSON,
     "data_offsets": st.lists(ANY_INT | SMALL_INT, min_size=2, max_size=2) | st.lists(ANY_INT, max_size=3) | JSON},
    optional={"extra": JSON},
)
HEADER = st.dictionaries(st.text(max_size=12), ENTRY | JSON, max_size=5) | JSON
METADATA = st.dictionaries(st.text(max_size=8), st.text(max_size=8) | JSON, max_size=3) | JSON


@given(st.binary(max_size=300))
@example(SMALL_VALID)
def test_fuzz_raw_bytes(data):
    tensors = _read_everything(data)
    if data == SMALL_VALID:
        assert tensors is not None and tensors["w"].tolist() == [[0, 1, 2], [3, 4, 5]]


@given(HEADER, st.none() | METADATA, st.binary(max_size=200),
       st.none() | st.integers(min_value=0, max_value=2**64 - 1))
@example({"a": {"dtype": "I8", "shape": [2, 2], "data_offsets": [0, 4]}}, {"k": "v"}, b"\x01\x02\x03\xff", None)
def test_fuzz_structured_headers(header, metadata, data, lying_length):
    if metadata is not None and isinstance(header, dict):
        header = {"__metadata__": metadata, **header}
    tensors = _read_everything(corpus.safetensors_bytes(header, data, header_len=lying_length))
    if header == {"__metadata__": {"k": "v"}, "a": {"dtype": "I8", "shape": [2, 2], "data_offsets": [0, 4]}}:
        assert tensors is not None and tensors["a"].tolist() == [[1, 2], [3, -1]]


_VALID = [corpus.good_bytes(), corpus.good_bytes(rank=1, seed=3),
          __import__("safetensors.torch").torch.save({"h": torch.ones(3, dtype=torch.float16),
                                                       "i": torch.arange(5, dtype=torch.int64),
                                                       "e": torch.empty(0, 7)}, metadata={"k": "v"})]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "length" and len(data) >= 8:
            data[:8] = struct.pack("<Q", draw(st.integers(0, 2**64 - 1) | st.integers(0, len(data) + 8)))
    return bytes(data)


@given(mutated())
@example(_VALID[0])
@example(_VALID[2])
def test_fuzz_mutated_files_agree_with_safetensors(data):
    ours = _read_everything(data)
    try:
        theirs = safetensors_load(data)
    except (SafetensorError, Exception):  # safetensors raises several types; any refusal is fine here
        assert data not in _VALID
        return
    assert ours is not None, "safetensors reads this file but we refuse it"
    assert set(ours) == set(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape
        assert _raw(ours[name]) == _raw(tensor)  # bitwise, so NaN payloads count too


def _raw(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


# LoRA-shaped files with consistent offsets: they pass the reader, so the layout and adapter code sees them.
MODULES = ["lora_unet_down_blocks_0_attn2_to_k", "lora_te_text_model_encoder_layers_0_mlp_fc1",
           "unet.down_blocks.0.attentions.0.proj_in", "diffusion_model.double_blocks.0.img_attn.qkv"]
SUFFIXES = [s for s, _, _ in __import__("loader.formats", fromlist=["SUFFIXES"]).SUFFIXES] + [".weight", ".diff"]


@st.composite
def lora_like(draw):
    tensors = {}
    for _ in range(draw(st.integers(1, 6))):
        name = draw(st.sampled_from(MODULES)) + draw(st.sampled_from(SUFFIXES))
        dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.bool]))
        shape = draw(st.lists(st.integers(0, 5), max_size=4))
        values = draw(st.sampled_from([0.0, 1.0, -0.5, float("nan"), float("inf")]))
        tensors[name] = torch.full(shape, values).to(dtype)
    return __import__("safetensors.torch").torch.save(tensors)


@given(lora_like(), st.booleans())
@example(corpus.good_bytes(), False)
def test_fuzz_lora_shaped_files_are_understood_or_refused(data, allow_nonfinite):
    path = _write(data)
    previous = os.environ.pop(files.ALLOW_NONFINITE_ENV, None)
    if allow_nonfinite:
        os.environ[files.ALLOW_NONFINITE_ENV] = "1"
    try:
        loaded = cache.LoraCache().load(path)
        layout = loaded.layout
        # Understood: every tensor belongs to a module or is listed as unused (never silently dropped).
        parts = [name for module in layout.modules.values() for name in module.parts.values()]
        assert sorted([*parts, *layout.unused]) == sorted(loaded.header.tensors)
        for adapter in loaded.adapters.values():
            # What planning does before a patch is registered (loader/plan.py): the change is computed on the
            # meta device for the weight it targets; a misfit is a reason in words, never an exception.
            for shape in [(4, 4), (5, 3, 3, 3), (8,)]:
                assert isinstance(plan._misfit(adapter, shape, None), str)
        if data == corpus.good_bytes():
            assert list(loaded.adapters) == [corpus.SD15_MODULE] and layout.problem() is None
    except files.LoraFileError as e:
        assert str(e).startswith(os.path.basename(path) + ": ")
        assert data != corpus.good_bytes(), e
    finally:
        os.environ.pop(files.ALLOW_NONFINITE_ENV, None)
        if previous is not None:
            os.environ[files.ALLOW_NONFINITE_ENV] = previous


NAME_PIECES = st.sampled_from(["a", "b", ".", "..", "/", "\\", ":", "C:", "\x00", " ", "?", "~", "//", "\\\\"])
NAME_TEXT = st.lists(NAME_PIECES, max_size=12).map("".join) | st.text()


@given(NAME_TEXT)
@example("a/b\\a")
def test_fuzz_names_never_leave_the_folder(name):
    plain = re.fullmatch(r"[ab]+([/\\][ab]+)*", name)  # an ordinary relative name: it must be kept
    try:
        relative = names.normalise(name)
    except names.LoraNameError as e:
        assert not plain, f"{name!r} refused: {e}"
        return
    if plain:
        assert relative == name.replace("\\", "/")
    assert relative and "\x00" not in relative
    parts = relative.split("/")
    assert ".." not in parts and "" not in parts and "\\" not in relative
    root = os.path.join(_folder, "loras")
    joined = os.path.normpath(os.path.join(root, *parts))
    assert joined.startswith(root + os.sep)


ROW_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6), JSON)
ROW = st.fixed_dictionaries({}, optional={"on": ROW_VALUE, "lora": ROW_VALUE, "strength": ROW_VALUE,
                                          "clip_strength": ROW_VALUE, "blocks": ROW_VALUE}) | JSON


@given(st.lists(ROW, max_size=5) | JSON, st.booleans())
@example([{"on": False, "lora": "a.safetensors", "strength": -2.5, "clip_strength": 0.5, "blocks": "IN04=0"}], True)
def test_fuzz_rows_parse_or_are_refused(value, as_text):
    given_rows = value
    if as_text:
        try:
            value = json.dumps(value)
        except ValueError:
            return
    try:
        rows = stack.rows_from_value(value)
    except stack.StackError:
        assert given_rows != [{"on": False, "lora": "a.safetensors", "strength": -2.5, "clip_strength": 0.5,
                               "blocks": "IN04=0"}]
        return
    for row in rows:
        entry = row.entry()
        strengths = (entry.strength_model, entry.strength_clip)
        assert all(math.isfinite(s) and abs(s) <= stack.MAX_STRENGTH for s in strengths), strengths
        assert isinstance(row.on, bool) and isinstance(row.lora, str) and isinstance(row.blocks, str)
    if isinstance(given_rows, list):  # each row keeps the strength it was given
        assert len(rows) == len(given_rows)
        for row, item in zip(rows, given_rows, strict=True):
            strength = item.get("strength", 1.0)
            if isinstance(strength, (int, float)) and not isinstance(strength, bool):
                assert row.strength == strength


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    for name in os.listdir(_folder):
        path = os.path.join(_folder, name)
        if os.path.isfile(path):
            os.unlink(path)
