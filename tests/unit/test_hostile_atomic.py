"""Nothing lost: atomic writes keep the old file whole when the writer dies, and never replace a file unasked."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loader import atomic

REPO = Path(__file__).resolve().parents[2]


def test_writes_and_replaces_only_when_asked(tmp_path):
    path = tmp_path / "preset.json"
    atomic.write_text(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    with pytest.raises(atomic.FileExistsRefused, match=r"preset\.json already exists; not replacing it"):
        atomic.write_text(path, '{"a": 2}')
    assert path.read_text() == '{"a": 1}'
    atomic.write_text(path, '{"a": 2}', replace=True)
    assert path.read_text() == '{"a": 2}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preset.json"]  # no temporary left behind


def test_an_error_while_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic.open_atomic(path, replace=True) as f:
        f.write(b"half of the new")
        raise RuntimeError("disk full, say")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]


def test_a_file_that_appears_while_writing_is_not_clobbered(tmp_path):
    path = tmp_path / "sidecar.json"
    with pytest.raises(atomic.FileExistsRefused), atomic.open_atomic(path) as f:
        f.write(b"ours")
        path.write_text("someone else's")  # e.g. the user saved the same name meanwhile
    assert path.read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sidecar.json"]


def test_symlink_target_is_never_followed_into_unless_replacing(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(atomic.FileExistsRefused):
        atomic.write_text(link, "x")
    atomic.write_text(link, "new", replace=True)  # replaces the link itself, never writes through it
    assert target.read_text() == "precious" and not link.is_symlink() and link.read_text() == "new"


def test_mode_follows_the_replaced_file_or_the_umask(tmp_path):
    path = tmp_path / "a.json"
    atomic.write_text(path, "1")
    assert path.stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK
    path.chmod(0o640)
    atomic.write_text(path, "2", replace=True)
    assert path.stat().st_mode & 0o777 == 0o640


_WRITER = """
import sys
sys.path.insert(0, {repo!r})
from loader import atomic
chunk = b"N" * (1 << 20)
with atomic.open_atomic({path!r}, replace=True) as f:
    for i in range(4096):  # up to 4 GiB: it is killed long before
        f.write(chunk)
        f.flush()
        if i == 8:
            print("writing", flush=True)
"""


def test_killing_the_writer_mid_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "hashes.json"
    old = os.urandom(3 * 1024 * 1024)
    path.write_bytes(old)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER.format(repo=str(REPO), path=str(path))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        temporaries = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert temporaries and temporaries[0].stat().st_size >= 8 << 20  # it really was mid-write
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(old).digest()
    # The killed writer leaves only a hidden temporary beside it, never a damaged file under the real name.
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "hashes.json")
    assert all(name.startswith(".hashes.json.") and name.endswith(".tmp") for name in leftovers)


def test_the_next_write_after_a_kill_succeeds(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    (tmp_path / ".state.json.abcd.tmp").write_text("left by a killed writer")
    atomic.write_text(path, "new", replace=True)
    assert path.read_text() == "new"


def test_concurrent_writers_never_mix(tmp_path):
    path = tmp_path / "shared.bin"
    script = ("import sys; sys.path.insert(0, {repo!r}); from loader import atomic\n"
              "for _ in range(30): atomic.write_bytes({path!r}, bytes([{n}]) * 200_000, replace=True)\n")
    writers = [subprocess.Popen([sys.executable, "-c", script.format(repo=str(REPO), path=str(path), n=n)])
               for n in (1, 2, 3)]
    deadline = time.monotonic() + 60
    seen = set()
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        if path.exists():
            data = path.read_bytes()
            assert len(data) == 200_000 and len(set(data)) == 1, "a reader saw a mixed or partial file"
            seen.add(data[0])
    for w in writers:
        assert w.wait(timeout=60) == 0
    data = path.read_bytes()
    assert len(data) == 200_000 and len(set(data)) == 1
