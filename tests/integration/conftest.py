import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import hosting

# Booted at collection time so that test modules can import comfy.* like any host code.
PACK = hosting.boot()


@pytest.fixture(scope="session")
def loras_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("loras")


@pytest.fixture(scope="session")
def pack(loras_dir):
    """This pack as the real host loaded it, with the host's loras folder pointed at a test folder."""
    hosting.set_loras_dir(loras_dir)
    return PACK


@pytest.fixture(scope="session")
def sd15(pack):
    return hosting.mini_model("SD15", seed=0)


@pytest.fixture(scope="session")
def sd15_clip(pack):
    return hosting.mini_clip_sd1(seed=1)
