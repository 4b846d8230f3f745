"""Stack rows, the ecosystem's LORA_STACK, and names that must stay inside the loras folders."""

import os

import pytest

from loader import names, stack


def test_rows_in_every_travel_shape():
    rows = [{"on": True, "lora": "a.safetensors", "strength": 0.5}, {"on": False, "lora": "b.safetensors"}]
    for value in (rows, {"__value__": rows}, '[{"on": true, "lora": "a.safetensors", "strength": 0.5},'
                                              ' {"on": false, "lora": "b.safetensors"}]'):
        parsed = stack.rows_from_value(value)
        assert [(r.lora, r.strength, r.clip_strength, r.on) for r in parsed] == [
            ("a.safetensors", 0.5, None, True), ("b.safetensors", 1.0, None, False)]
    assert stack.rows_from_value(None) == [] and stack.rows_from_value("") == []


@pytest.mark.parametrize(("value", "message"), [
    ("not json", "not valid JSON"), (42, "list of row objects"), ([1], "row 1 should be an object"),
    ([{"lora": "a", "strength": "x"}], "row 1: strength 'x' is not a number"),
    ([{"lora": "a"}, {"lora": "b", "clip_strength": float("nan")}], "row 2: clip_strength is nan"),
    ([{"lora": "a", "strength": float("-inf")}], "must be finite"),
])
def test_bad_rows_are_named(value, message):
    with pytest.raises(stack.StackError, match=message):
        stack.rows_from_value(value)


def test_stack_entries_are_three_tuples_that_carry_blocks():
    incoming = [("x.safetensors", 1.0, 0.5), ["y.safetensors", "0.3", 0.3], ("None", 1, 1), ("", 1, 1)]
    entries = stack.build_stack(incoming, stack.rows_from_value([{"lora": "z.safetensors", "strength": -0.5,
                                                                  "clip_strength": 0.25, "blocks": "M00=0"}]))
    assert [tuple(e) for e in entries] == [("x.safetensors", 1.0, 0.5), ("y.safetensors", 0.3, 0.3),
                                           ("z.safetensors", -0.5, 0.25)]
    name, strength_model, strength_clip = entries[2]
    assert (name, strength_model, strength_clip, entries[2].blocks) == ("z.safetensors", -0.5, 0.25, "M00=0")
    assert stack.entries_from_stack(None) == []
    with pytest.raises(stack.StackError, match="entry 1"):
        stack.entries_from_stack([("only-a-name",)])


@pytest.fixture
def loras(tmp_path):
    root = tmp_path / "loras"
    (root / "styles").mkdir(parents=True)
    (root / "styles" / "ink.safetensors").write_bytes(b"x")
    (root / "portrait.safetensors").write_bytes(b"x")
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"x")
    (root / "linked.safetensors").symlink_to(outside)
    return root


def test_names_resolve_inside_the_folders(loras):
    roots = [str(loras)]
    assert names.resolve("styles/ink.safetensors", roots) == os.path.join(loras, "styles", "ink.safetensors")
    assert names.resolve("styles\\ink.safetensors", roots).endswith("ink.safetensors")
    # A symlink the user placed inside a loras folder is the user's choice and keeps working.
    assert names.resolve("linked.safetensors", roots).endswith("linked.safetensors")


@pytest.mark.parametrize(("name", "message"), [
    ("../secret.safetensors", "steps out"), ("styles/../../secret.safetensors", "steps out"),
    ("/etc/passwd", "absolute path"), ("C:\\Windows\\x.safetensors", "absolute path"),
    ("\\\\server\\share\\x.safetensors", "absolute path"), ("a\x00.safetensors", "NUL byte"), ("", "no LoRA name"),
])
def test_names_that_would_escape(loras, name, message):
    with pytest.raises(names.LoraNameError, match=message):
        names.resolve(name, [str(loras)])


def test_missing_names_suggest_close_matches(loras):
    available = ["styles/ink.safetensors", "portrait.safetensors"]
    with pytest.raises(names.LoraNameError, match=r"did you mean 'styles/ink.safetensors'\?"):
        names.resolve("ink.safetensors", [str(loras)], available)
    with pytest.raises(names.LoraNameError, match=r"'portrait\.safetensors'"):
        names.resolve("portrait_v2.safetensors", [str(loras)], available)
