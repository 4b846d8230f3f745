"""Planning a stack entry without the host: key maps are plain dicts, the model is its weight shapes."""

import pytest
import torch
from safetensors.torch import save_file

from loader import cache, plan, spec
from loader.blocks import BlockMap
from loader.stack import StackEntry

UNET_KEY = "diffusion_model.input_blocks.4.1.proj_in.weight"
OUT_KEY = "diffusion_model.output_blocks.3.1.proj_in.weight"
TE_KEY = "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"


@pytest.fixture
def lora(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "lora_unet_a.lora_down.weight": torch.randn(2, 8, generator=g),
        "lora_unet_a.lora_up.weight": torch.randn(6, 2, generator=g),
        "lora_unet_a.alpha": torch.tensor(1.0),
        "lora_unet_b.lora_down.weight": torch.randn(2, 8, generator=g),
        "lora_unet_b.lora_up.weight": torch.randn(5, 2, generator=g),  # 5 rows: does not fit a [6, 8] weight
        "lora_unet_c.lora_down.weight": torch.randn(2, 8, generator=g),
        "lora_unet_c.lora_up.weight": torch.randn(6, 2, generator=g),
        "lora_te_d.lora_down.weight": torch.randn(2, 4, generator=g),
        "lora_te_d.lora_up.weight": torch.randn(4, 2, generator=g),
        "lora_unet_nowhere.lora_down.weight": torch.randn(2, 8, generator=g),
        "lora_unet_nowhere.lora_up.weight": torch.randn(6, 2, generator=g),
    }
    path = tmp_path / "plan.safetensors"
    save_file(tensors, str(path))
    return cache.read_lora(str(path))


def facts(has_clip: bool) -> plan.ModelFacts:
    return plan.ModelFacts(
        unet_map={"lora_unet_a": UNET_KEY, "lora_unet_b": UNET_KEY, "lora_unet_c": OUT_KEY},
        clip_map={"lora_te_d": TE_KEY} if has_clip else {},
        shapes={"model": {UNET_KEY: (6, 8), OUT_KEY: (6, 8)}, "clip": {TE_KEY: (4, 4)} if has_clip else {}},
        has_clip=has_clip,
        mismatch_note=lambda base: "",
    )


def test_every_contribution_with_its_coefficient(lora):
    block_map = BlockMap.from_keys("SD15", [UNET_KEY, OUT_KEY], [TE_KEY])
    weights = spec.parse("IN04=0.5, OUT03=0, BASE=2", block_map)
    report, contributions = plan.plan_entry(lora, StackEntry("plan.safetensors", 0.8, -1.0, "x"), weights,
                                            facts(has_clip=True))
    got = {(c.target, c.host_key, c.module_key): c.coefficient for c in contributions}
    assert got == {("model", UNET_KEY, "lora_unet_a"): pytest.approx(0.4),
                   ("clip", TE_KEY, "lora_te_d"): pytest.approx(-2.0)}  # OUT03 = 0 leaves lora_unet_c out
    assert report.unmatched == ["lora_unet_nowhere"]
    assert len(report.misfits) == 1 and report.misfits[0].startswith("lora_unet_b: its change does not fit")
    assert "1 modules do not fit" in report.line() and "1 modules matched nothing" in report.line()


def test_text_encoder_without_clip_is_skipped_not_unmatched(lora):
    weights = spec.parse("", BlockMap.from_keys("SD15", [UNET_KEY, OUT_KEY], []))
    report, contributions = plan.plan_entry(lora, StackEntry("plan.safetensors", 1.0, 1.0), weights,
                                            facts(has_clip=False))
    assert report.skipped_text_encoder == 1 and "lora_te_d" not in report.unmatched
    assert {c.module_key for c in contributions} == {"lora_unet_a", "lora_unet_c"}


def test_nothing_matching_is_an_error_naming_the_file(lora):
    empty = plan.ModelFacts({}, {}, {"model": {}, "clip": {}}, has_clip=True,
                            mismatch_note=lambda base: "this is a SDXL LoRA but the model is SD15")
    weights = spec.parse("", BlockMap.from_keys("SD15", [], []))
    with pytest.raises(plan.LoraApplyError, match=r"^plan.safetensors: this is a SDXL LoRA but the model is SD15"):
        plan.plan_entry(lora, StackEntry("plan.safetensors", 1.0, 1.0), weights, empty)
