"""LoRA stacks on GGUF models, through city96's ComfyUI-GGUF itself (the real peer, loaded as a custom node).

Set LORADECK_GGUF_PATH to a ComfyUI-GGUF checkout to run these (DEVELOPERS.md says where to get it); without
it they skip, and test_quantized.py's contract test (a layer whose state dict holds another shape than its
weight) stands in. Models: the miniature Flux (assembled as ComfyUI-GGUF's UnetLoaderGGUF does, from its
`gguf_sd_loader`, `GGMLOps` and `GGUFModelPatcher`; the host's detection cannot size a miniature Flux) and
the miniature SD3 (through the UnetLoaderGGUF node itself), written as .gguf files in Q8_0 and in Q6_K
(a K-quant) where rows allow. GGUF layers apply patches at forward time to the dequantized weight, so the
weights compared are what the layer computes with (`get_weight`). Reference: the host's core LoraLoader on
the same GGUF model. Tolerance: ‖ours − host‖ / ‖host change‖ ≤ 1e-5 per weight (both apply fp32 math to
the same dequantized weight; nothing is re-quantized).
"""

from __future__ import annotations

import asyncio
import os
import sys

import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import folder_paths
import hosting
import pytest
import quantized
import torch
from compare import worst_relative_error

import nodes

GGUF_PATH = os.environ.get("LORADECK_GGUF_PATH")
pytestmark = pytest.mark.skipif(
    not GGUF_PATH, reason="LORADECK_GGUF_PATH is unset: no ComfyUI-GGUF checkout to load as the real peer "
                          "(test_quantized.py's packed-layer contract test runs instead)")

TOLERANCE = 1e-5
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def peer(pack):
    """ComfyUI-GGUF's module as the host loaded it (its nodes module: GGMLOps, GGUFModelPatcher, its loader)."""
    if "UnetLoaderGGUF" not in nodes.NODE_CLASS_MAPPINGS:
        assert asyncio.run(nodes.load_custom_node(os.path.abspath(GGUF_PATH))), "the host failed to load ComfyUI-GGUF"
    return sys.modules[nodes.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"].__module__]


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory):
    """A diffusion_models folder of the host holding the .gguf files (ComfyUI-GGUF lists `unet_gguf` from it)."""
    folder = tmp_path_factory.mktemp("unet")
    paths = folder_paths.folder_names_and_paths["diffusion_models"][0]
    paths.append(str(folder))
    yield folder
    paths.remove(str(folder))


def flux_gguf(peer, path, base):
    """The miniature Flux from a .gguf file, built the way UnetLoaderGGUF builds a detected model."""
    state_dict = peer.gguf_sd_loader(str(path))
    config = comfy.supported_models.Flux(dict(base.model.model_config.unet_config))
    config.set_inference_dtype(torch.float32, None)
    config.custom_operations = peer.GGMLOps()
    model = config.get_model(state_dict, "")
    model.load_model_weights(state_dict, "")
    return peer.GGUFModelPatcher.clone(comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU))


def sd3_gguf(peer, path, base):
    return nodes.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]().load_unet(path.name)[0]


FAMILIES = {"Flux": (6, "flux", flux_gguf), "SD3": (7, "sd3", sd3_gguf)}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_loras(request, loras_dir, pack):
    return request.param, quantized.make_loras(loras_dir, request.param, "gguf")


@pytest.fixture(scope="module", params=[False, True], ids=["Q8_0", "Q6_K"])
def gguf_model(request, peer, unet_dir, family_loras):
    (family, rows), k_quant = family_loras, request.param
    seed, arch, load = FAMILIES[family]
    base = hosting.mini_model(family, seed=seed)
    path = unet_dir / f"mini_{family}_{'q6_k' if k_quant else 'q8_0'}.gguf"
    types = quantized.write_gguf(str(path), base.model.diffusion_model.state_dict(), arch, k_quant)
    return family, rows, load(peer, path, base), types


def forward_weights(peer, patcher, keys) -> dict[str, torch.Tensor]:
    """Each weight as the GGUF layer computes with it (dequantized, its patches applied), after the patcher loads."""
    patcher.patch_model(device_to=CPU)
    try:
        out = {}
        for key in keys:
            owner, name = key.rsplit(".", 1)
            layer = comfy.utils.get_attr(patcher.model, owner)
            tensor = getattr(layer, name)
            quantized_now = peer.is_quantized(tensor)
            out[key] = layer.get_weight(tensor, torch.float32) if quantized_now else tensor.detach().clone().float()
        return out
    finally:
        patcher.unpatch_model(device_to=CPU)


def changes(peer, patcher, base_weights) -> dict[str, torch.Tensor]:
    keys = quantized.patched_keys(patcher)
    weights = forward_weights(peer, patcher, keys)
    return {key: weights[key] - base_weights[key] for key in keys}


def test_stack_on_gguf_equals_host_loader(peer, gguf_model):
    family, rows, model, types = gguf_model
    assert isinstance(model, peer.GGUFModelPatcher)
    ours, report = quantized.deck_stack(model, rows)
    host = quantized.host_stack(model, rows)
    assert "do not fit" not in report and "matched nothing" not in report, report
    assert isinstance(ours, peer.GGUFModelPatcher)
    keys = quantized.patched_keys(ours, host)
    base = forward_weights(peer, model, keys)
    ours_changes, host_changes = changes(peer, ours, base), changes(peer, host, base)
    assert worst_relative_error(ours_changes, host_changes) <= TOLERANCE
    patched_types = {types[key.removeprefix("diffusion_model.")] for key in ours_changes}
    assert {"Q6_K" if "Q6_K" in types.values() else "Q8_0"} <= patched_types, patched_types
    print(f"GGUF {family} {sorted(set(types.values()))}: {len(ours_changes)} weights, max |ours − host| "
          f"{max((ours_changes[k] - host_changes[k]).abs().max().item() for k in host_changes):.3g}, "
          f"worst ‖ours − host‖/‖host change‖ {worst_relative_error(ours_changes, host_changes):.3g}")


def test_fused_patch_survives_gguf_moving_its_data(peer, gguf_model):
    """GGUF moves patch data with `move_patch_to_device` and a host may rebuild a patch as
    `type(patch)(loaded_keys, moved weights)`: the rebuilt stack patch gives the same weights."""
    _, rows, model, _ = gguf_model
    ours, _ = quantized.deck_stack(model, rows)
    keys = quantized.patched_keys(ours)
    base = forward_weights(peer, model, keys)
    before = changes(peer, ours, base)
    rebuilt = ours.clone()
    for key in keys:
        moved = []
        for strength, patch, strength_model, offset, function in peer.move_patch_to_device(rebuilt.patches[key], CPU):
            patch = type(patch)(patch.loaded_keys, peer.move_patch_to_device(patch.weights, CPU))
            moved.append((strength, patch, strength_model, offset, function))
        rebuilt.patches[key] = moved
    after = changes(peer, rebuilt, base)
    assert all(torch.equal(before[key], after[key]) for key in keys)
