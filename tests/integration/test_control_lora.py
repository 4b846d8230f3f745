"""BFL's Flux control LoRAs (FLUX.1 Canny/Depth [dev] LoRA) on a miniature Flux, against the host's LoraLoader.

The file is built in the real layout (BFL names without prefix, as in flux1-canny-dev-lora.safetensors): a
LoRA (`lora_A`/`lora_B`, `lora_B.bias`, no alpha) on every linear layer, the RMSNorm scales
(`…query_norm.scale`, `…key_norm.scale`) stored whole, and `img_in`'s LoRA taking twice the image channels
(noise and control latent). The host converts it (comfy/lora_convert.py): the scales become `set` patches,
`img_in` is padded to the wider shape (reshape_weight). The reference is the host's own patched model;
ours must be equal, weight for weight, shapes included, and the host's Flux must see the wider input.
"""

from __future__ import annotations

import comfy.sd
import comfy.utils
import hosting
import pytest
import torch
from safetensors.torch import save_file

import nodes

RANK = 4


def control_file(model, path: str, seed: int = 11) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = model.model.diffusion_model.state_dict()
    tensors = {}
    for key, weight in state.items():
        if key.endswith("_norm.scale"):
            tensors[key] = 1 + 0.1 * torch.randn(weight.shape, generator=g)
        elif key.endswith(".weight") and weight.dim() == 2:
            name = key[: -len(".weight")]
            n_out, n_in = weight.shape
            rank = RANK
            if name == "img_in":
                n_in, rank = 2 * n_in, n_out  # the control latent beside the noise; BFL's img_in rank is full
            tensors[f"{name}.lora_A.weight"] = 0.2 * torch.randn(rank, n_in, generator=g)
            tensors[f"{name}.lora_B.weight"] = 0.2 * torch.randn(n_out, rank, generator=g)
            if f"{name}.bias" in state:
                tensors[f"{name}.lora_B.bias"] = 0.05 * torch.randn(n_out, generator=g)
    save_file(tensors, path)
    return tensors


def patched(patcher) -> dict[str, torch.Tensor]:
    """Every weight of the model as the host's patcher patches it (in place, then restored)."""
    patcher.patch_model()
    try:
        return {k: v.detach().clone() for k, v in patcher.model.state_dict().items()}
    finally:
        patcher.unpatch_model()


@pytest.fixture(scope="module")
def flux_control(loras_dir, pack):
    model = hosting.mini_model("Flux", seed=7)
    path = str(loras_dir / "flux1-canny-mini-lora.safetensors")
    tensors = control_file(model, path)
    assert "img_in.lora_A.weight" in tensors and "single_blocks.0.norm.key_norm.scale" in tensors
    return model, path


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_control_lora_equals_the_hosts_loader(flux_control, strength):
    model, path = flux_control
    base = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
    host, _ = comfy.sd.load_lora_for_models(model, None, comfy.utils.load_torch_file(path, safe_load=True),
                                            strength, 0.0)
    ours, _, report = nodes.NODE_CLASS_MAPPINGS["LoraDeckLoader"]().execute(
        model=model, lora_name="flux1-canny-mini-lora.safetensors", strength_model=strength, clip=None,
        strength_clip=0.0).args[:3]
    want, got = patched(host), patched(ours)
    assert set(got) == set(want)
    changed = [k for k in want if want[k].shape != base[k].shape or not torch.equal(want[k], base[k])]
    assert "diffusion_model.img_in.weight" in changed and len(changed) > 60
    for key in want:
        assert got[key].shape == want[key].shape, key
        scale = float(want[key].abs().max()) or 1.0
        assert float((got[key] - want[key]).abs().max()) <= 1e-5 * scale, key
    img_in = base["diffusion_model.img_in.weight"].shape
    assert want["diffusion_model.img_in.weight"].shape == (img_in[0], 2 * img_in[1])
    assert f"control LoRA: widened img_in from {list(img_in)} to {[img_in[0], 2 * img_in[1]]}" in report
    assert "matched nothing" not in report and "no layout" not in report
    assert all(torch.equal(v, base[k]) for k, v in model.model.state_dict().items())  # the input is untouched


def test_the_hosts_flux_takes_the_control_latent_through_the_widened_input(flux_control):
    model, _ = flux_control
    ours, _, _ = nodes.NODE_CLASS_MAPPINGS["LoraDeckLoader"]().execute(
        model=model, lora_name="flux1-canny-mini-lora.safetensors", strength_model=1.0, clip=None,
        strength_clip=0.0).args[:3]
    noise = torch.zeros(1, 16, 8, 8)
    assert model.model.concat_cond(noise=noise, device=torch.device("cpu")) is None  # the plain model: no input
    ours.patch_model()
    try:
        concat = ours.model.concat_cond(noise=noise, device=torch.device("cpu"),
                                        concat_latent_image=torch.zeros(1, 16, 8, 8))
    finally:
        ours.unpatch_model()
    assert concat is not None and concat.shape[1] == 16
