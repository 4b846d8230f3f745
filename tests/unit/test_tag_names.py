"""Names in prompt tags: by relative path, by stem anywhere, by the ss_output_name alias; never a silent pick."""

from __future__ import annotations

import pytest

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
