"""Block maps from key sets, exact ‖ΔW‖ from factors, the presets file and the heatmap."""

from __future__ import annotations

import math
import os
from pathlib import Path

import keysets
import pytest
import torch

from loader import block_guess, blocks, energy, heatmap, presets, spec
from loader.blocks import BlockMap


def test_sd1_block_map_is_a1111s_numbering():
    bm = BlockMap.from_keys("SD15", keysets.sd1(), keysets.clip_keys("clip_l"))
    assert bm.family == "sd1"
    assert bm.ids == ("BASE", "EMB", *(f"IN{i:02d}" for i in range(12)), "M00",
                      *(f"OUT{i:02d}" for i in range(12)), "FINAL")
    assert bm.block_of("diffusion_model.middle_block.2.in_layers.2.weight") == "M00"
    assert bm.block_of("diffusion_model.input_blocks.10.0.in_layers.2.weight") == "IN10"
    assert bm.block_of("diffusion_model.time_embed.0.weight") == "EMB"
    assert bm.block_of("diffusion_model.out.2.weight") == "FINAL"
    assert bm.block_of("clip_l." + keysets.CLIP_LAYER) == "BASE"
    assert bm.block_of("model_sampling.sigmas") is None
    assert bm.element_path("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight") == \
        "1.transformer_blocks.0.attn2.to_k"


def test_sdxl_has_nine_levels_and_two_encoders():
    bm = BlockMap.from_keys("SDXL", keysets.sdxl(), keysets.clip_keys("clip_l", "clip_g"))
    assert bm.family == "sdxl" and bm.text_encoders == ("TE1", "TE2")
    assert bm.aliases["BASE"] == ("TE1", "TE2") and bm.aliases["CLIP_G"] == ("TE2",)
    assert bm.block_of("diffusion_model.label_emb.0.0.weight") == "EMB"
    assert bm.blocks[-1] == "OUT08"


def test_flux_chains_and_fused_parts():
    bm = BlockMap.from_keys("Flux", keysets.flux(), keysets.clip_keys("clip_l", "t5xxl"))
    assert bm.family == "double_single"
    assert bm.chains["double_blocks"][-1] == "D18" and bm.chains["single_blocks"][-1] == "S37"
    assert bm.aliases["CLIP"] == ("TE1",) and bm.aliases["T5"] == ("TE2",)
    parts = bm.fused_parts("diffusion_model.single_blocks.0.linear1.weight")
    assert [(p.name, p.start, p.stop) for p in parts] == [("q", 0, 8), ("k", 8, 16), ("v", 16, 24), ("mlp", 24, 56)]
    assert [p.name for p in bm.parts_in("diffusion_model.single_blocks.0.linear1.weight", (0, 0, 24))] == \
        ["q", "k", "v"]
    # Key lists without shapes still resolve blocks, just not the row parts.
    plain = BlockMap.from_keys("Flux", list(keysets.flux()), [])
    assert plain.fused_parts("diffusion_model.single_blocks.0.linear1.weight") == ()


@pytest.mark.parametrize(("chain", "prefix"), [("blocks", "B"), ("transformer_blocks", "B"), ("layers", "L"),
                                               ("joint_blocks", "J"), ("double_stream_blocks", "D")])
def test_generic_chains(chain, prefix):
    bm = BlockMap.from_keys("X", keysets.chains(chain, 40), keysets.clip_keys("umt5xxl"))
    assert bm.family == "chains"
    assert bm.blocks == tuple(f"{prefix}{i:02d}" for i in range(40))
    assert bm.ids[0] == "BASE" and bm.ids[1] == "EMB" and bm.ids[-1] == "FINAL"
    assert bm.block_of(f"diffusion_model.{chain}.7.cross_attn.k.weight") == f"{prefix}07"


def test_unknown_chain_gets_initials_and_an_embedding_is_not_a_chain():
    keys = ["diffusion_model.text_embedding.0.weight", "diffusion_model.text_embedding.2.weight",
            *(f"diffusion_model.foo_bars.{i}.attn.q.weight" for i in range(3)), "diffusion_model.head.weight"]
    bm = BlockMap.from_keys("X", keys, [])
    assert bm.blocks == ("FB0", "FB1", "FB2")  # two-letter prefixes number like NR0, CR0
    assert bm.block_of("diffusion_model.text_embedding.2.weight") == "EMB"


@pytest.mark.parametrize(("keys", "expected"), [
    (["lora_unet_input_blocks_4_1_proj_in", "lora_te1_text_model_encoder_layers_0_mlp_fc1",
      "lora_te2_text_model_encoder_layers_0_mlp_fc1"], {"IN04", "TE1", "TE2"}),
    (["unet.down_blocks.2.attentions.1.proj_in", "unet.up_blocks.1.attentions.2.proj_out",
      "unet.mid_block.attentions.0.proj_in", "unet.down_blocks.1.downsamplers.0.conv"],
     {"IN08", "OUT05", "M00", "IN06"}),
    (["transformer.transformer_blocks.3.attn.to_q", "transformer.single_transformer_blocks.37.proj_mlp"],
     {"D03", "S37"}),
    (["lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_single_blocks_9_linear1"], {"D00", "S09"}),
    (["diffusion_model.blocks.29.ffn.0", "diffusion_model.blocks.0.self_attn.q"], {"B29", "B00"}),
])
def test_guess_from_lora_names(keys, expected):
    bm, stand_in = block_guess.guess_from_lora(keys)
    assert {bm.block_of(stand_in[k]) for k in keys} == expected
    spec.parse("", bm)  # a usable map


def test_compress_ids():
    assert blocks.compress_ids(["IN00", "IN01", "IN02", "IN05", "M00", "OUT01", "OUT02"]) == \
        "IN00…IN02, IN05, M00, OUT01, OUT02"


# exact norms ----------------------------------------------------------------------------------------------

def _g(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _fro(t):
    return float(torch.linalg.vector_norm(t))


def test_lora_norm_equals_the_full_delta():
    up, down = _g(96, 8, seed=1), _g(8, 40, seed=2)
    assert energy.lora_norm(up, down, 0.5) == pytest.approx(_fro(0.5 * up @ down), rel=1e-12)


def test_conv_and_tucker_lora_norm():
    up, down = _g(16, 4, 1, 1, seed=1), _g(4, 8, 3, 3, seed=2)
    full = (up.flatten(1) @ down.flatten(1)).reshape(16, 8, 3, 3)
    assert energy.lora_norm(up, down, 2.0) == pytest.approx(_fro(2 * full), rel=1e-12)
    mid, down1 = _g(4, 4, 3, 3, seed=3), _g(4, 8, 1, 1, seed=4)
    full = torch.einsum("oa,abhw,bi->oihw", up.flatten(1), mid, down1.flatten(1))
    assert energy.lora_norm(up, down1, 0.25, mid) == pytest.approx(_fro(0.25 * full), rel=1e-12)


def test_lokr_and_loha_norms():
    w1, w2a, w2b = _g(4, 6, seed=1), _g(12, 3, seed=2), _g(3, 10, seed=3)
    full = torch.kron(w1, w2a @ w2b)
    got = energy.delta_norm(energy.Factors("lokr", {"w1": w1, "w2_a": w2a, "w2_b": w2b}, 0.7))
    assert got == pytest.approx(_fro(0.7 * full), rel=1e-12)
    t = {"w1a": _g(20, 4, seed=5), "w1b": _g(4, 9, seed=6), "w2a": _g(20, 4, seed=7), "w2b": _g(4, 9, seed=8)}
    full = (t["w1a"] @ t["w1b"]) * (t["w2a"] @ t["w2b"])
    assert energy.delta_norm(energy.Factors("loha", t, 0.3)) == pytest.approx(_fro(0.3 * full), rel=1e-12)
    assert energy.delta_norm(energy.Factors("diff", {"diff": full})) == pytest.approx(_fro(full))
    assert energy.delta_norm(energy.Factors("oft", {})) is None


def test_table_adds_in_quadrature_and_applies_ratios():
    bm = BlockMap.from_keys("SD15", keysets.sd1(), keysets.clip_keys("clip_l"))
    weights = spec.parse("IN04=0.5", bm)
    k1 = "diffusion_model.input_blocks.4.1.proj_in.weight"
    k2 = "diffusion_model.input_blocks.4.1.proj_out.weight"
    k3 = "diffusion_model.output_blocks.3.1.proj_in.weight"
    entries = [energy.KeyEnergy(k1, None, "lora", 3.0), energy.KeyEnergy(k2, None, "lora", 4.0),
               energy.KeyEnergy(k3, None, "lora", 5.0), energy.KeyEnergy("nowhere", None, "lora", 1.0),
               energy.KeyEnergy(k3.replace("proj_in", "proj_out"), None, "oft", None)]
    table = energy.table(entries, weights)
    assert table.rows["IN04"].norm == pytest.approx(5.0) and table.rows["IN04"].applied == pytest.approx(2.5)
    assert table.share("IN04") == pytest.approx(0.5) and table.share("OUT03") == pytest.approx(0.5)
    assert table.rows["OUT03"].unmeasured == 1 and table.unplaced == ["nowhere"]
    text = table.format()
    assert "IN04" in text and "50.0%" in text and "1 not measured" in text and "outside the model" in text


# presets file ---------------------------------------------------------------------------------------------

def test_presets_file_round_trip(tmp_path):
    path = tmp_path / "lbwpresets.txt"
    path.write_text("# comment line\nFACE:1,0,0,0,0,0,0,0,1,1,1,0,0,0,0,0,0\n\nKEEP:default=0; M00=1  # trailing\n")
    loaded = presets.load(path)
    assert loaded == {"FACE": "1,0,0,0,0,0,0,0,1,1,1,0,0,0,0,0,0", "KEEP": "default=0; M00=1"}
    presets.save(path, "KEEP", "M00=0.5")
    presets.save(path, "NEW", "OUT*=0")
    text = path.read_text()
    assert "# comment line" in text and "KEEP:M00=0.5" in text and text.endswith("NEW:OUT*=0\n")
    assert os.listdir(tmp_path) == ["lbwpresets.txt"]  # no `.lbwpresets.txt.*.tmp` (loader/atomic.py) left


def test_saving_a_preset_replaces_the_file_in_one_step(tmp_path, monkeypatch):
    path = tmp_path / "lbwpresets.txt"
    path.write_text("KEEP:M00=1\n")
    before = path.stat().st_ino
    presets.save(path, "NEW", "OUT*=0")
    assert path.stat().st_ino != before  # a new file renamed over the old one, not the old one rewritten
    written = []

    def failing_replace(source, target):  # the last step of an atomic write fails (disk full, power cut)
        written.append(Path(source).read_text())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        presets.save(path, "LATER", "IN04=0")
    assert written == ["KEEP:M00=1\nNEW:OUT*=0\nLATER:IN04=0\n"]  # the new contents went to the temporary
    assert path.read_text() == "KEEP:M00=1\nNEW:OUT*=0\n"  # the user's file is whole and unchanged
    assert os.listdir(tmp_path) == ["lbwpresets.txt"]


def test_presets_file_errors(tmp_path):
    assert presets.load(tmp_path / "missing.txt") == {} and presets.load("") == {}
    bad = tmp_path / "bad.txt"
    bad.write_text("no colon here\n")
    with pytest.raises(presets.PresetFileError, match=r"bad\.txt line 1: expected NAME:spec"):
        presets.load(bad)
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"A:1\n" * 300_000)
    with pytest.raises(presets.PresetFileError, match="limited"):
        presets.load(huge)
    with pytest.raises(presets.PresetFileError, match="preset name"):
        presets.save(tmp_path / "p.txt", "bad name", "1")


# heatmap --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("arch", "keys", "clips"), [
    ("SD15", keysets.sd1(), ("clip_l",)), ("SDXL", keysets.sdxl(), ("clip_l", "clip_g")),
    ("Flux", keysets.flux(), ("clip_l", "t5xxl"))])
def test_heatmap_renders_every_block(arch, keys, clips):
    bm = BlockMap.from_keys(arch, keys, keysets.clip_keys(*clips))
    some = [k for k in keys if "input_blocks.4." in k or "double_blocks.3." in k]
    entries = [energy.KeyEnergy(k, None, "lora", 1.0 + i) for i, k in enumerate(some)]
    image = heatmap.render(energy.table(entries, spec.parse("", bm)), arch)
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[2] == 3
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    cells = heatmap.layout(bm)
    assert {slot for slot, _, _ in cells} == set(bm.ids)
    assert len({(r, c) for _, r, c in cells}) == len(cells)  # no two cells overlap
    # the strongest block is drawn in the top colour of the ramp
    strongest = "IN04" if arch != "Flux" else "D03"
    _slot, row, col = next(c for c in cells if c[0] == strongest)
    x = heatmap.GAP + col * (heatmap.CELL_W + heatmap.GAP) + 1
    y = 8 + 5 * heatmap.SCALE + 8 + row * (heatmap.CELL_H + heatmap.GAP) + 1
    assert torch.allclose(image[y, x], torch.tensor(heatmap.ANCHORS[-1], dtype=torch.float32), atol=1e-6)


def test_unet_cells_form_a_u():
    bm = BlockMap.from_keys("SD15", keysets.sd1(), [])
    rows = {slot: row for slot, row, _ in heatmap.layout(bm)}
    assert rows["IN00"] < rows["IN05"] < rows["IN11"] < rows["M00"]
    assert rows["OUT00"] == rows["IN11"] and rows["OUT11"] == rows["IN00"]
    assert not math.isnan(heatmap.colour(0.5)[0])


def test_adapter_norms_of_every_factored_kind_equal_their_full_deltas():
    from loader import adapter_types as adapters
    from loader.energy import adapter_norm

    g = torch.Generator().manual_seed(5)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    weight = torch.zeros(12, 8)
    cases = [
        adapters.LoRA(up=r(12, 3), down=r(3, 8), scale=0.5),
        adapters.LoHa(w1a=r(12, 2), w1b=r(2, 8), w2a=r(12, 2), w2b=r(2, 8), scale=2.0),
        adapters.LoKr(w1=r(3, 2), w2a=r(4, 2), w2b=r(2, 4), scale=0.25),
        adapters.LoKr(w1a=r(3, 1), w1b=r(1, 2), w2=r(4, 4)),
        adapters.Full(diff=r(12, 8)),
    ]
    for adapter in cases:
        kind, norm, dora = adapter_norm(adapter)
        assert kind == adapter.kind and not dora
        assert norm == pytest.approx(adapter.delta(weight).norm().item(), rel=1e-5)
    assert adapter_norm(adapters.IA3(w=r(12)))[1] is None  # depends on the base weight: not measured
