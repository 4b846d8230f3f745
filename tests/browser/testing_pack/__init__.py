"""A test-only node for the browser tests: a miniature SD1 model and CLIP built from the host's own classes
(tests/hosting.py), so a workflow queued in the browser runs LoRA Deck's nodes on a real MODEL."""

import importlib.util
from pathlib import Path

_HOSTING = Path(__file__).resolve().parents[2] / "hosting.py"
_spec = importlib.util.spec_from_file_location("loradeck_test_hosting", _HOSTING)
hosting = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hosting)


class LoraDeckTestMiniModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 1000})}}

    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "build"
    CATEGORY = "testing"

    def build(self, seed):
        return hosting.mini_model("SD15", seed=seed), hosting.mini_clip_sd1(seed=seed + 1)


NODE_CLASS_MAPPINGS = {"LoraDeckTestMiniModel": LoraDeckTestMiniModel}
