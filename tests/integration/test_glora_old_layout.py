"""Old-layout GLoRA (LyCORIS 1.8–2.x: a1 [r, in], a2 [in, r], b1 [r, in], b2 [out, r]) on the miniature SD1 model.

The file is written as that LyCORIS saved it through its kohya wrapper (tests/producers.old_lycoris_glora),
on the host model's own layers (kohya LDM names, which the host maps). References: the host's own result
(comfy.sd.load_lora_for_models; its weight adapter reads this layout as `old_glora`) and the producer's
merge_to, b2 @ b1 + W @ a2 @ a1 at alpha / r. Layers: square and wide linears, a 1×1 conv, and one square
full-rank layer where all four factors are square and the weight's shape decides the layout (as in the host).
Tolerance: ‖ours − ref‖ / ‖ref‖ ≤ 1e-4 per weight, strengths 0.8 and −0.5.
"""

from __future__ import annotations

import comfy.sd
import comfy.utils
import producers
import pytest
from compare import changed, worst_relative_error
from safetensors.torch import save_file

import nodes

TOLERANCE = 1e-4
LAYERS = {  # host layer (under diffusion_model.) -> rank
    "input_blocks.1.1.transformer_blocks.0.attn1.to_q": 32,  # 32 × 32 at rank 32: every factor square
    "input_blocks.4.1.transformer_blocks.0.attn2.to_k": 4,
    "input_blocks.4.1.transformer_blocks.0.ff.net.0.proj": 4,
    "input_blocks.4.1.proj_in": 2,
    "time_embed.0": 4,
}


@pytest.fixture(scope="module")
def old_glora(loras_dir, sd15):
    modules = dict(sd15.model.diffusion_model.named_modules())
    tensors, merges = producers.old_lycoris_glora({p: modules[p] for p in LAYERS}, LAYERS, alpha=2.0, seed=95)
    save_file(tensors, str(loras_dir / "glora_old.safetensors"), {"ss_network_module": "lycoris.kohya"})
    return str(loras_dir / "glora_old.safetensors"), merges


def test_old_layout_glora_equals_the_host_and_the_producer(old_glora, sd15):
    path, merges = old_glora
    assert tuple(sd15.model.state_dict()["diffusion_model.input_blocks.4.1.proj_in.weight"].shape[2:]) == (1, 1)
    for strength in (0.8, -0.5):
        model, _, report = nodes.NODE_CLASS_MAPPINGS["LoraDeckLoader"].execute(
            model=sd15, lora_name="glora_old.safetensors", strength_model=strength).args[:3]
        ours = changed(model)
        reference = {f"diffusion_model.{p}.weight": merge(strength) for p, merge in merges.items()}
        assert worst_relative_error(ours, reference) <= TOLERANCE, strength
        host_model, _ = comfy.sd.load_lora_for_models(sd15, None, comfy.utils.load_torch_file(path), strength, 0)
        assert worst_relative_error(ours, changed(host_model)) <= TOLERANCE, strength
        assert "kohya glora" in report and "unlike ComfyUI core" not in report and "matched nothing" not in report
