"""Names in prompt tags: by relative path, by stem anywhere, by the ss_output_name alias; never a silent pick."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loader import names

AVAILABLE = ["a/ink.safetensors", "b/ink.safetensors", "grain.safetensors", "styles/x.pt", "styles/x.safetensors",
             "solo.safetensors", "deep/er/Portrait v2.safetensors", "renamed.safetensors"]
ALIASES = {"grain.safetensors": "filmgrain", "solo.safetensors": "ink", "renamed.safetensors": "grain"}


def resolve(name):
    return names.resolve_tag_name(name, AVAILABLE, ALIASES.get)


@pytest.mark.parametrize(("name", "expected"), [
    ("a/ink.safetensors", "a/ink.safetensors"),  # the exact file: never ambiguous
    ("a/ink", "a/ink.safetensors"),  # relative path without the extension
    ("a\\ink", "a/ink.safetensors"),  # either separator
    ("Portrait v2", "deep/er/Portrait v2.safetensors"),  # stem anywhere in the folders
    ("filmgrain", "grain.safetensors"),  # the metadata alias
    ("solo", "solo.safetensors"),
    ("styles/x.pt", "styles/x.pt"),
])
def test_a_name_resolves_to_one_file(name, expected):
    assert resolve(name) == expected


@pytest.mark.parametrize(("name", "candidates"), [
    ("ink", ["'a/ink.safetensors' (by file name)", "'b/ink.safetensors' (by file name)",
             "'solo.safetensors' (by alias (ss_output_name))"]),
    ("styles/x", ["'styles/x.pt' (by path)", "'styles/x.safetensors' (by path)"]),
    ("grain", ["'grain.safetensors' (by path)", "'renamed.safetensors' (by alias (ss_output_name))"]),
])
def test_two_files_for_one_name_is_an_error_naming_every_candidate(name, candidates):
    with pytest.raises(names.LoraNameError) as caught:
        resolve(name)
    message = str(caught.value)
    assert f"matches {len(candidates)} files" in message
    for candidate in candidates:
        assert candidate in message
    assert "<lora:" in message  # how to choose one


def test_a_missing_name_is_the_stacks_error_with_close_matches():
    with pytest.raises(names.LoraNameError) as caught:
        resolve("portrait v3")
    assert str(caught.value) == names.missing_message("portrait v3", AVAILABLE)
    assert "did you mean 'deep/er/Portrait v2.safetensors'" in str(caught.value)


@pytest.mark.parametrize("name", ["../secret", "/etc/passwd", "C:\\x", "a\x00b", " "])
def test_names_stay_inside_the_loras_folders(name):
    with pytest.raises(names.LoraNameError):
        resolve(name)


def test_no_alias_reader_means_paths_and_stems_only():
    assert names.resolve_tag_name("ink", ["a/ink.safetensors", "solo.safetensors"]) == "a/ink.safetensors"


_PART = st.sampled_from(["a", "b", "ink", "Ink", "x.y"])
_FILE = st.tuples(st.lists(_PART, max_size=2), _PART, st.sampled_from([".safetensors", ".pt"])).map(
    lambda t: "/".join([*t[0], t[1] + t[2]]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_FILE, min_size=1, max_size=8, unique=True), st.sampled_from(["a", "ink", "a/ink", "x.y", "b/x.y.pt"]),
       st.dictionaries(st.integers(0, 7), _PART, max_size=3))
def test_fuzz_a_name_gives_its_only_match_or_an_error_listing_all(available, name, alias_at):
    aliases = {available[i]: a for i, a in alias_at.items() if i < len(available)}

    def matches(candidate):
        stem = os.path.splitext(candidate.rsplit("/", 1)[-1])[0]
        return (candidate == name or os.path.splitext(candidate)[0] == name
                or ("/" not in name and (stem == name or aliases.get(candidate) == name)))

    expected = [c for c in available if matches(c)]
    try:
        found = names.resolve_tag_name(name, available, aliases.get)
    except names.LoraNameError as e:
        assert name not in available and len(expected) != 1  # an error only when there is no single match
        for candidate in expected:
            assert repr(candidate) in str(e)
        return
    assert found == name if name in available else [found] == expected
