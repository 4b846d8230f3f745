"""Test nodes for prompts run by the host's own executor: a source of the session's miniature models and
an output node that patches them as a sampler would and reports digests of the patched weights."""

from __future__ import annotations

import hashlib

import torch

MODELS: dict[str, object] = {}
PROBE_TEXT = "a photo of a cat"


class MiniModel:
    """Source node: the miniature model and text encoder put in MODELS by the test."""

    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "make"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        return MODELS["model"], MODELS["clip"]


class Probe:
    """Output node: patches the model the way a sampler would, with the host's own patch_model, digests its
    weights, then unpatches; encodes a fixed text with the text encoder and digests the conditioning."""

    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)},
                "optional": {"clip": ("CLIP",), "report": ("STRING", {"forceInput": True})}}

    def probe(self, model, clip=None, report=""):
        model.patch_model()
        try:
            finite = all(bool(torch.isfinite(p).all()) for p in model.model.parameters())
            patched_weights = weights_digest(model.model)
        finally:
            model.unpatch_model()
        # The text encoder as the host runs it (its own load path patches it): the conditioning's bytes.
        clip_weights = tensor_digest(clip.encode_from_tokens(clip.tokenize(PROBE_TEXT))) if clip is not None else ""
        return {"ui": {"report": [report], "patched": [len(model.patches)], "finite": [finite],
                       "patched_weights": [patched_weights], "base_weights": [weights_digest(model.model)],
                       "conditioning": [clip_weights]}}


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every weight's bytes: two runs patched the model identically when their digests are equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(raw).hexdigest()


def stack_prompt(prefix: str, rows: list[dict]) -> dict:
    """An API prompt: <prefix>MiniModel → LoraDeckStack(rows) → LoraDeckApply → <prefix>Probe (node "3")."""
    return {"1": {"class_type": f"{prefix}MiniModel", "inputs": {}},
            "4": {"class_type": "LoraDeckStack", "inputs": {"rows": {"__value__": rows}}},
            "2": {"class_type": "LoraDeckApply",
                  "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_stack": ["4", 0]}},
            "3": {"class_type": f"{prefix}Probe", "inputs": {"model": ["2", 0], "clip": ["2", 1]}}}


def register(prefix: str) -> list[str]:
    """Add the two nodes to the host as <prefix>MiniModel and <prefix>Probe; the names, to remove later."""
    import nodes

    added = {f"{prefix}MiniModel": MiniModel, f"{prefix}Probe": Probe}
    nodes.NODE_CLASS_MAPPINGS.update(added)
    return list(added)


def unregister(names: list[str]) -> None:
    import nodes

    for name in names:
        nodes.NODE_CLASS_MAPPINGS.pop(name, None)
