"""Hostile workflow values (shared JSON) against the core: names, strengths, rows, stacks from other packs."""

from __future__ import annotations

import json
import os

import pytest

from loader import names, stack


@pytest.fixture
def loras(tmp_path):
    root = tmp_path / "loras"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.safetensors").write_bytes(b"x")
    (root / "x.safetensors").mkdir()  # a folder with a LoRA's name
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"x")
    outside_folder = tmp_path / "elsewhere"
    outside_folder.mkdir()
    (outside_folder / "b.safetensors").write_bytes(b"x")
    (root / "mine.safetensors").symlink_to(secret)  # the user's own links keep working
    (root / "shared").symlink_to(outside_folder, target_is_directory=True)
    return root


@pytest.mark.parametrize(("name", "problem"), [
    ("../secret.safetensors", "steps out of the loras folders"),
    ("..\\secret.safetensors", "steps out of the loras folders"),
    ("sub/../../secret.safetensors", "steps out of the loras folders"),
    ("sub\\..\\..\\secret.safetensors", "steps out of the loras folders"),
    ("./../secret.safetensors", "steps out of the loras folders"),
    ("/etc/passwd", "is an absolute path"),
    ("//etc/passwd", "is an absolute path"),
    ("C:\\Windows\\System32\\config\\SAM", "is an absolute path"),
    ("C:secret.safetensors", "is an absolute path"),
    ("\\\\server\\share\\a.safetensors", "is an absolute path"),
    ("\\\\?\\C:\\a.safetensors", "is an absolute path"),
    ("\\secret.safetensors", "is an absolute path"),
    ("sub/a.safetensors\x00.txt", "contains a NUL byte"),
    ("\x00", "contains a NUL byte"),
    ("x.safetensors", "is a folder in your loras folders, not a file"),
    (".", "names a folder, not a file"),
    ("", "no LoRA name given"),
    ("   ", "no LoRA name given"),
    (None, "no LoRA name given"),
    (42, "should be text, not int"),
    (["a.safetensors"], "should be text, not list"),
    ("a" * 100_000 + ".safetensors", "LoRA not found: 'aaaa"),
])
def test_names_that_must_not_resolve(loras, name, problem):
    with pytest.raises(names.LoraNameError) as caught:
        names.resolve(name, [str(loras)], ["sub/a.safetensors", "mine.safetensors"])
    assert problem in str(caught.value)
    assert len(str(caught.value)) < 400  # a megabyte name is never echoed whole


@pytest.mark.parametrize("name", ["sub/a.safetensors", "sub\\a.safetensors", "./sub//a.safetensors",
                                  "mine.safetensors", "shared/b.safetensors", "shared\\b.safetensors"])
def test_names_that_resolve_stay_inside_lexically(loras, name):
    path = names.resolve(name, [str(loras)])
    assert os.path.normpath(path).startswith(str(loras) + os.sep)


@pytest.mark.parametrize("typed", [1e30, -1e30, float("nan"), float("inf"), float("-inf"), 100.5, "1e400", True])
def test_strengths_typed_into_rows(typed):
    row = {"lora": "a.safetensors", "strength": typed}
    with pytest.raises(stack.StackError, match=r"row 1: strength .*(finite numbers|between -100 and 100|not a number)"):
        stack.rows_from_value([row])
    with pytest.raises(stack.StackError, match=r"row 1: clip_strength"):
        stack.rows_from_value([{"lora": "a.safetensors", "clip_strength": typed}])


def test_strengths_in_json_text_rows():
    # Python's json (and so the host's /prompt) reads NaN and Infinity literals.
    for literal in ("NaN", "Infinity", "-Infinity", "1e30"):
        with pytest.raises(stack.StackError, match="row 1: strength"):
            stack.rows_from_value(f'[{{"lora": "a.safetensors", "strength": {literal}}}]')


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e30])
def test_strengths_from_another_packs_stack(value):
    with pytest.raises(stack.StackError, match=r"LORA_STACK|entry|strength_model"):
        stack.entries_from_stack([("a.safetensors", value, 1.0)])


@pytest.mark.parametrize("value", [float("nan"), float("-inf"), 1e30])
def test_stack_entries_refuse_bad_strengths_wherever_they_are_made(value):
    with pytest.raises(stack.StackError, match=r"a\.safetensors: strength_clip"):
        stack.StackEntry("a.safetensors", 1.0, value)


def test_on_typed_as_text_means_what_it_says():
    rows = stack.rows_from_value([{"lora": "a", "on": "false"}, {"lora": "b", "on": "True"}, {"lora": "c", "on": 0},
                                  {"lora": "d", "on": None}])
    assert [r.on for r in rows] == [False, True, False, True]
    with pytest.raises(stack.StackError, match="row 1: on should be true or false"):
        stack.rows_from_value([{"lora": "a", "on": "nope"}])


def test_deeply_nested_rows_json():
    with pytest.raises(stack.StackError, match="nested too deeply"):
        stack.rows_from_value("[" * 100_000 + "]" * 100_000)


def test_two_hundred_rows():
    rows = [{"lora": f"l{i:03}.safetensors", "strength": (i % 7) / 7} for i in range(200)]
    entries = stack.build_stack(None, stack.rows_from_value(json.dumps(rows)))
    assert len(entries) == 200 and entries[199].lora_name == "l199.safetensors"


def test_symlink_loops_and_devices_are_not_files(loras):
    (loras / "loop.safetensors").symlink_to(loras / "loop.safetensors")
    (loras / "zeros.safetensors").symlink_to("/dev/zero")
    for name in ("loop.safetensors", "zeros.safetensors"):
        with pytest.raises(names.LoraNameError, match="LoRA not found"):
            names.resolve(name, [str(loras)])


def test_a_million_rows_are_refused_before_any_is_read():
    with pytest.raises(stack.StackError, match=r"1000000 rows; a stack holds at most 1000"):
        stack.rows_from_value([{"lora": "a.safetensors"}] * 1_000_000)
    with pytest.raises(stack.StackError, match=r"LORA_STACK has 5000 entries"):
        stack.entries_from_stack([("a.safetensors", 1.0, 1.0)] * 5000)
