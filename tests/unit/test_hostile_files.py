"""The hostile-file corpus against the reader alone: each file is refused with a message naming it and the problem.

Memory is measured with tracemalloc: a header that claims gigabytes must not make us allocate them.
Pickles are opened only by torch's weights-only unpickler; a canary proves their payload never runs.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import traceback
import tracemalloc
import zipfile

import hostile_corpus as corpus
import pytest
import torch
from safetensors.torch import save

from loader import cache, files

NOBODY = 65534


def read(path) -> cache.LoadedLora:
    """Everything a node does with a file before it touches a model."""
    loaded = cache.LoraCache().load(str(path))
    _ = loaded.adapters
    return loaded


def assert_refused(path, problem: str) -> files.LoraFileError:
    with pytest.raises(files.LoraFileError) as caught:
        read(path)
    message = str(caught.value)
    assert re.fullmatch(re.escape(os.path.basename(path)) + ": " + problem + ".*", message, re.S), message
    assert "Traceback" not in message
    return caught.value


@pytest.mark.parametrize("case", corpus.HEADER_CASES + corpus.CONTENT_CASES, ids=lambda c: c.name)
def test_corpus_file_is_refused_with_its_name_and_problem(tmp_path, case):
    assert_refused(case.write(tmp_path), case.problem)


def test_folder_named_like_a_lora(tmp_path):
    assert_refused(corpus.DIRECTORY_CASE.write(tmp_path), corpus.DIRECTORY_CASE.problem)


def test_pipe_named_like_a_lora_never_blocks(tmp_path):
    pipe = tmp_path / "pipe.safetensors"
    os.mkfifo(pipe)
    assert_refused(pipe, r"is not a regular file")


def test_missing_file(tmp_path):
    assert_refused(tmp_path / "gone.safetensors", r"does not exist \(moved or deleted\?\)")


def test_unreadable_file():
    """A file the process may see but not open (mode 000). Root reads anything, so the check runs in a
    forked child that first drops to `nobody` when the tests run as root (as CI does)."""
    folder = tempfile.mkdtemp(prefix="loradeck-locked-")  # under the temp root: `nobody` can reach it
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "locked.safetensors")
        with open(path, "wb") as f:
            f.write(corpus.good_bytes())
        os.chmod(path, 0)

        def check():
            os.stat(path)  # the file is there: what fails is opening it, not finding it
            assert not os.access(path, os.R_OK), "the child can still read the file"
            assert_refused(path, r"cannot be read \(Permission denied\)")

        failure = in_child_without_privileges(check)
        assert failure == "", failure
    finally:
        shutil.rmtree(folder)


def in_child_without_privileges(check) -> str:
    """Runs check() in a forked child, as `nobody` when we are root: "" when it passed, else why it failed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            check()
            status = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode()[-4000:])
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        why = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return "" if os.waitstatus_to_exitcode(status) == 0 else why or f"the child exited with {status}"


def test_file_inside_a_file_named_like_a_folder(tmp_path):
    (tmp_path / "styles.safetensors").write_bytes(corpus.good_bytes())
    assert_refused(tmp_path / "styles.safetensors" / "ink.safetensors", r"cannot be read \(Not a directory\)")


def test_good_file_loads(tmp_path):
    path = tmp_path / "good.safetensors"
    path.write_bytes(corpus.good_bytes())
    loaded = read(path)
    assert list(loaded.adapters) == [corpus.SD15_MODULE]


def test_multi_gigabyte_header_allocates_nothing(tmp_path):
    case = next(c for c in corpus.HEADER_CASES if c.name == "multi_gigabyte_header")
    path = case.write(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(files.LoraFileError):
            files.read_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"peak {peak} bytes for a header claiming 8 GiB"


def test_header_at_the_limit_is_read_only_as_far_as_the_file_goes(tmp_path):
    # A length just under the limit, but a tiny file: refused from the file's real size, nothing read.
    path = tmp_path / "claims_99mb.safetensors"
    path.write_bytes(corpus.safetensors_bytes(b"{}", b"", header_len=files.MAX_HEADER_BYTES - 1))
    tracemalloc.start()
    try:
        with pytest.raises(files.LoraFileError, match="truncated download"):
            files.read_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


def test_memory_bomb_header_is_refused_before_parsing(tmp_path):
    # 30 MB of empty lists: Python's JSON parser would turn this into ~650 MB of objects.
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(corpus.safetensors_bytes(b'{"a":[' + b"[]," * 10_000_000 + b"[]]}"))
    tracemalloc.start()
    try:
        assert_refused(path, r"has a header of 10000003 objects and lists")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * path.stat().st_size, f"peak {peak} bytes for a {path.stat().st_size}-byte file"


def test_tensor_data_claims_cannot_exceed_the_file(tmp_path):
    # A header whose offsets promise 8 GiB of tensor data in a file of a few bytes.
    header = {"a": corpus.entry(shape=[2**31], offsets=[0, 2**33])}
    path = tmp_path / "claims_8gb_data.safetensors"
    path.write_bytes(corpus.safetensors_bytes(header, b"\0" * 16))
    tracemalloc.start()
    try:
        assert_refused(path, r"tensor 'a' ends at byte 8589934592 but the data section has \d+ bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


class TestNonFinite:
    def test_refused_by_default_naming_a_tensor(self, tmp_path, monkeypatch):
        monkeypatch.delenv(files.ALLOW_NONFINITE_ENV, raising=False)
        case = next(c for c in corpus.CONTENT_CASES if c.name == "nonfinite")
        assert_refused(case.write(tmp_path), case.problem)

    def test_opt_in_loads_it(self, tmp_path, monkeypatch):
        monkeypatch.setenv(files.ALLOW_NONFINITE_ENV, "1")
        case = next(c for c in corpus.CONTENT_CASES if c.name == "nonfinite")
        loaded = read(case.write(tmp_path))
        assert torch.isnan(loaded.tensors[f"{corpus.SD15_MODULE}.lora_up.weight"]).any()

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e5m2, torch.float8_e4m3fn])
    def test_every_float_dtype_is_checked(self, tmp_path, monkeypatch, dtype):
        monkeypatch.delenv(files.ALLOW_NONFINITE_ENV, raising=False)
        tensors = {k: v.to(dtype) for k, v in corpus.good_tensors().items()}
        tensors[f"{corpus.SD15_MODULE}.lora_up.weight"][0, 0] = float("nan")
        path = tmp_path / "half.safetensors"
        path.write_bytes(save(tensors))
        assert_refused(path, r"has NaN or infinite values in 1 tensor\(s\)")

    def test_float64_values_beyond_float32_count(self, tmp_path, monkeypatch):
        monkeypatch.delenv(files.ALLOW_NONFINITE_ENV, raising=False)
        tensors = {k: v.double() for k, v in corpus.good_tensors().items()}
        tensors[f"{corpus.SD15_MODULE}.lora_down.weight"][1, 1] = 1e300
        path = tmp_path / "f64.safetensors"
        path.write_bytes(save(tensors))
        assert_refused(path, r"has NaN or infinite values in 1 tensor\(s\)")

    def test_opting_out_again_refuses_the_cached_file(self, tmp_path, monkeypatch):
        case = next(c for c in corpus.CONTENT_CASES if c.name == "nonfinite")
        path = str(case.write(tmp_path))
        lora_cache = cache.LoraCache()
        monkeypatch.setenv(files.ALLOW_NONFINITE_ENV, "yes")
        _ = lora_cache.load(path).adapters
        opened = files.stats.files_opened
        monkeypatch.setenv(files.ALLOW_NONFINITE_ENV, "0")
        with pytest.raises(files.LoraFileError, match="NaN or infinite"):
            _ = lora_cache.load(path).adapters
        assert files.stats.files_opened == opened  # decided from the cached scan, no second read

    def test_checked_once_per_load_then_cached(self, tmp_path, monkeypatch):
        monkeypatch.delenv(files.ALLOW_NONFINITE_ENV, raising=False)
        path = tmp_path / "fine.safetensors"
        path.write_bytes(corpus.good_bytes())
        checks = []
        original = files.nonfinite_tensors
        monkeypatch.setattr(files, "nonfinite_tensors", lambda t: checks.append(1) or original(t))
        lora_cache = cache.LoraCache()
        for _ in range(3):
            _ = lora_cache.load(str(path)).adapters
        assert len(checks) == 1


class TestPickles:
    def test_code_in_a_pickle_never_runs(self, tmp_path):
        canary = corpus.Canary(tmp_path)
        for path in corpus.evil_pickles(tmp_path, canary):
            error = assert_refused(path, r"is a pickle that would call [\w.]+; it was refused unopened")
            if path.name == "evil_zip.ckpt":
                assert "would call exec;" in str(error)
            assert "Convert it to .safetensors" in str(error)
            assert not canary.fired(), f"{path.name} ran its payload"

    def test_canary_is_live(self, tmp_path):
        # The same payload through the unsafe unpickler does fire: the canary can see what it guards against.
        canary = corpus.Canary(tmp_path)
        path = corpus.evil_pickles(tmp_path, canary)[0]
        try:
            torch.load(path, weights_only=False)
            assert canary.fired()
        finally:
            os.environ.pop(canary.env, None)

    def test_plain_tensor_pickle_loads(self, tmp_path):
        path = tmp_path / "old.ckpt"
        torch.save({"state_dict": corpus.good_tensors()}, path)
        assert list(read(path).adapters) == [corpus.SD15_MODULE]

    def test_zip_bomb_is_refused_before_unpacking(self, tmp_path):
        path = tmp_path / "bomb.pt"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("bomb/data.pkl", b"\0" * (64 * 1024 * 1024))
        assert path.stat().st_size < 1024 * 1024
        tracemalloc.start()
        try:
            assert_refused(path, r"is an archive that unpacks to 67108864 bytes from \d+; refused")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024

    @pytest.mark.parametrize(("payload", "problem"), [
        ([1, 2, 3], r"is a pickle of list, not a dict of tensors"),
        ({"a": 1}, r"holds no tensors"),
    ])
    def test_pickles_without_tensors(self, tmp_path, payload, problem):
        path = tmp_path / "odd.pt"
        torch.save(payload, path)
        assert_refused(path, problem)

    def test_garbage_with_a_pickle_suffix(self, tmp_path):
        path = tmp_path / "garbage.ckpt"
        path.write_bytes(b"\x80\x02}q\x00(X\x01\x00\x00\x00a" + bytes(range(256)) * 4)
        assert_refused(path, r"(is a pickle that holds more than plain tensors|is not a readable PyTorch file)")

    def test_truncated_archive(self, tmp_path):
        path = tmp_path / "cut.pt"
        torch.save(corpus.good_tensors(), path)
        path.write_bytes(path.read_bytes()[:700])
        assert_refused(path, r"is not a readable PyTorch file \(damaged or truncated\? RuntimeError\)")

    def test_legacy_pickle_claiming_a_terabyte_storage(self, tmp_path):
        import io
        import struct

        buffer = io.BytesIO()
        torch.save({"a": torch.ones(4)}, buffer, _use_new_zipfile_serialization=False)
        data = buffer.getvalue()
        at = data.rfind(struct.pack("<q", 4))  # the storage's element count, just before its data
        path = tmp_path / "legacy_huge.pt"
        path.write_bytes(data[:at] + struct.pack("<q", 2**40) + data[at + 8:])
        assert_refused(path, r"is not a readable PyTorch file")
