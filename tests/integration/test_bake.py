"""LoraDeckBake on the real host: the baked file, loaded by the host's own core loader at strength 1, patches
the model and text encoder as LoRA Deck Apply patches them with the original stack.

Tolerances: exact mode ≤1e-5 relative per weight (fp32). Budget mode: the error the report and the file's
metadata give equals ‖exact − baked‖ / ‖exact‖ measured here from the host's own patched weights, to 1e-4
relative (the two differ only by fp32 rounding).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import comfy.sd
import comfy.utils
import producers
import pytest
import torch
from compare import changed, worst_relative_error
from safetensors import safe_open
from test_nodes import node

from nodes import NODE_CLASS_MAPPINGS

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def sources(loras_dir):
    """Three producer-made LoRAs: kohya (UNet + text encoder), PEFT (UNet), LyCORIS LoCon (UNet, conv too)."""
    folder = loras_dir / "bake"
    folder.mkdir(exist_ok=True)
    unet = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=4, alpha=8, seed=80)
    text = producers.attach_lora(producers.transformers_clip_text(), producers.TEXT_TARGETS, rank=4, alpha=2, seed=81)
    producers.save_kohya_sd15(str(folder / "kohya.safetensors"), unet, text)
    unet = producers.attach_lora(producers.diffusers_sd15_unet(), ["to_q", "to_v", "ff.net.2"], rank=8, alpha=4,
                                 seed=82)
    producers.save_peft_sd15(str(folder / "peft.safetensors"), unet, None)
    return folder


def stack(*rows):
    return node("LoraDeckStack").execute(rows=[dict(on=True, **row) for row in rows]).args[0]


STACK = [
    {"lora": "bake/kohya.safetensors", "strength": 0.8, "clip_strength": 0.6},
    {"lora": "bake/peft.safetensors", "strength": -0.5, "clip_strength": 1.0, "blocks": "IN*=0.5, OUT05=0"},
]


def bake(model, clip, lora_stack, filename, rank, overwrite=False):
    return node("LoraDeckBake").execute(model=model, lora_stack=lora_stack, filename=filename, rank=rank,
                                        overwrite=overwrite, clip=clip).args


def host_loads(path, model, clip):
    lora = comfy.utils.load_torch_file(str(path), safe_load=True)
    return comfy.sd.load_lora_for_models(model, clip, lora, 1.0, 1.0)


def test_exact_bake_equals_the_stack_through_core_loader(sources, loras_dir, sd15, sd15_clip):
    lora_stack = stack(*STACK)
    report, name = bake(sd15, sd15_clip, lora_stack, "baked/exact", rank=64)
    assert name == "baked/exact.safetensors" and "exact" in report.splitlines()[0], report
    ours_model, ours_clip, _ = node("LoraDeckApply").execute(model=sd15, lora_stack=lora_stack, clip=sd15_clip).args
    host_model, host_clip = host_loads(loras_dir / name, sd15, sd15_clip)
    ours, host = changed(ours_model), changed(host_model)
    assert set(host) == set(ours) and len(ours) > 200
    assert worst_relative_error(host, ours) <= TOLERANCE
    assert worst_relative_error(changed(host_clip.patcher), changed(ours_clip.patcher)) <= TOLERANCE
    assert len(changed(host_clip.patcher)) == 72
    assert name in NODE_CLASS_MAPPINGS["LoraDeckLoader"].define_schema().inputs[1].options  # in pickers now


def relative_error(exact: dict, baked: dict) -> tuple[float, float]:
    """(worst per weight, total) of ‖exact change − baked change‖ / ‖exact change‖."""
    worst, error, norm = 0.0, 0.0, 0.0
    for key, change in exact.items():
        diff = float((change - baked.get(key, torch.zeros_like(change))).norm())
        worst = max(worst, diff / float(change.norm()))
        error += diff ** 2
        norm += float(change.norm()) ** 2
    return worst, math.sqrt(error / norm)


def test_budget_bake_reports_the_error_it_makes(sources, loras_dir, sd15, sd15_clip):
    lora_stack = stack(*STACK)
    report, name = bake(sd15, None, lora_stack, "baked/budget", rank=6)  # kohya 4 + PEFT 8 > 6 on shared weights
    ours_model, _, _ = node("LoraDeckApply").execute(model=sd15, lora_stack=lora_stack).args
    host_model, _ = host_loads(loras_dir / name, sd15, None)
    exact, baked = changed(ours_model), changed(host_model)
    worst, total = relative_error(exact, baked)
    with safe_open(str(loras_dir / name), "pt") as f:
        summary = json.loads(f.metadata()["loradeck.bake"])
    assert not summary["exact"] and total > 1e-3  # the budget really cut something
    assert math.isclose(summary["relative_error"], total, rel_tol=1e-4)
    assert f"relative error {total:.3g} in total" in report
    assert report.splitlines()[1].endswith(f"relative error {worst:.3g}"), report  # the worst weight first


def test_metadata_names_the_sources_and_rebakes_identically(sources, loras_dir, sd15, sd15_clip):
    lora_stack = stack(*STACK)
    _, name = bake(sd15, sd15_clip, lora_stack, "baked/again", rank=64)
    first = (loras_dir / name).read_bytes()
    bake(sd15, sd15_clip, lora_stack, "baked/again", rank=64, overwrite=True)
    assert (loras_dir / name).read_bytes() == first  # deterministic
    with safe_open(str(loras_dir / name), "pt") as f:
        meta = f.metadata()
    baked_from = json.loads(meta["loradeck.baked_from"])
    assert [s["name"] for s in baked_from] == [row["lora"] for row in STACK]
    for source in baked_from:
        sha = hashlib.sha256(Path(loras_dir / source["name"]).read_bytes()).hexdigest()
        assert source["sha256"] == sha and source["autov2"] == sha[:10].upper()
    assert baked_from[1]["blocks"] == STACK[1]["blocks"] and baked_from[0]["strength_model"] == 0.8
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["ss_base_model_version"] == "sd_v1"


def test_existing_files_and_names_outside_are_refused(sources, loras_dir, sd15):
    bake_node = NODE_CLASS_MAPPINGS["LoraDeckBake"]
    (loras_dir / "baked").mkdir(exist_ok=True)
    kept = loras_dir / "baked" / "kept.safetensors"
    kept.write_bytes(b"someone's file")
    assert "already exists" in bake_node.validate_inputs(filename="baked/kept", overwrite=False)
    with pytest.raises(ValueError, match="already exists"):
        bake(sd15, None, stack(STACK[0]), "baked/kept", rank=8)
    assert kept.read_bytes() == b"someone's file"
    for outside in ("../escape", "/tmp/escape", "a/../../escape", "bad\0name"):
        assert bake_node.validate_inputs(filename=outside, overwrite=True) is not True, outside
        with pytest.raises(ValueError):
            bake(sd15, None, stack(STACK[0]), outside, rank=8, overwrite=True)
    assert not (loras_dir.parent / "escape.safetensors").exists()
    bake(sd15, None, stack(STACK[0]), "baked/kept", rank=8, overwrite=True)
    assert kept.read_bytes() != b"someone's file"


def test_info_panel_says_baked_from(sources, loras_dir, sd15, pack):
    _, name = bake(sd15, None, stack(STACK[0]), "baked/info", rank=8)
    facts = pack.loader.info.lora_facts(loras_dir / name)
    assert [s["name"] for s in facts["baked_from"]] == [STACK[0]["lora"]]
