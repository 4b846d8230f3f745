"""Block View measures every adapter type exactly, weight-dependent ones too, when a model is connected.

GLoRA, IA³, OFT, BOFT and DoRA change a weight by an amount that depends on the weight itself; with the model
connected Block View reads the base weight and measures ‖ΔW‖ exactly. Files are made by lycoris-lora on the
diffusers SD1 UNet carrying the host miniature's weights; the reference is the producer's own change at
strength 1, captured from each module's forward pass (tests/producers.py), on host keys. Without a model the
weight-dependent types are listed as not measured (their norm cannot be known from the file alone).
"""

from __future__ import annotations

import zlib
from importlib import import_module

import producers
import pytest
import torch
from test_formats import SD1_LAYERS, on_host, sd1_unet_like

VARIANTS = ["glora", "ia3", "diag_oft", "boft_rescaled", "dora_out", "loha_dora", "locon"]


@pytest.fixture(scope="module")
def made(loras_dir, pack, sd15, tmp_path_factory):
    presets = tmp_path_factory.mktemp("presets")
    out = {}
    for variant in VARIANTS:
        unet = sd1_unet_like(sd15)
        names = producers.module_names(("", unet))
        preset = producers.lycoris_preset(str(presets / f"{variant}.toml"), names=SD1_LAYERS)
        network = producers.make_lycoris(unet, variant, seed=zlib.crc32(variant.encode()) % 1000, preset=preset)
        name = f"blockview_{variant}.safetensors"
        network.save_weights(str(loras_dir / name), torch.float32, {"ss_network_module": "lycoris.kohya"})
        out[variant] = (name, on_host(producers.lycoris_deltas(network, names, 1.0, [unet]), sd15))
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_block_view_norm_of_every_type_equals_the_producers_change(made, pack, sd15, variant):
    block_view = import_module(pack.__name__ + ".nodes.block_view")
    cache = import_module(pack.__name__ + ".loader.cache")
    folders = import_module(pack.__name__ + ".nodes.folders")
    name, reference = made[variant]
    loaded = cache.shared_cache.load(folders.resolve(name))
    entries, _, notes = block_view._entries(loaded, sd15, None)
    measured = {e.model_key: e for e in entries}
    weights = {k: d for k, d in reference.items() if k.endswith(".weight")}
    assert set(measured) == set(weights), notes
    for key, delta in weights.items():
        entry = measured[key]
        assert entry.norm is not None and not entry.dora, (variant, key)
        assert entry.norm == pytest.approx(float(delta.double().norm()), rel=1e-4), (variant, key)


@pytest.mark.parametrize("variant", ["glora", "ia3", "diag_oft"])
def test_without_a_model_weight_dependent_types_are_not_measured(made, pack, variant):
    block_view = import_module(pack.__name__ + ".nodes.block_view")
    cache = import_module(pack.__name__ + ".loader.cache")
    folders = import_module(pack.__name__ + ".nodes.folders")
    loaded = cache.shared_cache.load(folders.resolve(made[variant][0]))
    entries, _, _ = block_view._entries(loaded, None, None)
    assert entries and all(e.norm is None for e in entries)
