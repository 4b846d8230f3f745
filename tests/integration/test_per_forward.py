"""A stack on a partially loaded model, where the host computes patched weights on every forward.

When a model does not fit its memory budget, the host loads part of it and gives the rest of its patched
modules a `comfy.model_patcher.LowVramPatch` (`ModelPatcher.load(lowvram_model_memory=…)`, and
`partially_unload` when memory runs short later): those weights stay unpatched and each forward computes
the patched weight from the patch (LoRA Deck's fused patch, loader/fuse.py, and the adapters it leaves
unfused). The outputs must equal the fully patched model's.

References: the host's own full patching of the same stack (`load(full_load=True)`, our patches computed
once and written into the weights), and the host's own `LoraLoaderModelOnly` chain on the same kohya files,
fully loaded (core does not read the PEFT DoRA file). Tolerance: ‖out − ref‖ / ‖ref − unpatched out‖
(relative to the stack's change of the output) ≤ 1e-6 against the full load, ≤ 1e-5 against core; fp32, a
miniature SD1 UNet. The partial load is checked to have left some patched modules unpatched in place, with a
LowVramPatch, and to have patched the others.
"""

from __future__ import annotations

import comfy.model_patcher
import hosting
import producers
import pytest
import torch

import nodes

SAME_PATCHES = 1e-6  # partial vs full load of one stack: the same patch math, only where it runs differs
CORE = 1e-5  # vs core's per-file patches: the fused sum is taken in another order (as tests/integration/test_fused)
CPU = torch.device("cpu")
PLAIN = "plain"
BLOCKS = "blocks"


@pytest.fixture(scope="module")
def stack_rows(loras_dir, pack):
    """Two kohya files (fused into one patch per weight) and a PEFT DoRA file (applied by itself)."""
    a = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=4, alpha=8, seed=40)
    b = producers.attach_lora(producers.diffusers_sd15_unet(), ["to_q", "to_v", "ff.net.2", "conv1"], rank=8,
                              alpha=4, seed=41)
    dora = producers.attach_lora(producers.diffusers_sd15_unet(), ["to_k", "to_out.0", "conv2"], rank=4, alpha=8,
                                 seed=42, use_dora=True)
    producers.save_kohya_sd15(str(loras_dir / "per_forward_a.safetensors"), a, None)
    producers.save_kohya_sd15(str(loras_dir / "per_forward_b.safetensors"), b, None)
    producers.save_peft_sd15(str(loras_dir / "per_forward_dora.safetensors"), dora, None)
    plain = [{"on": True, "lora": "per_forward_a.safetensors", "strength": 0.9},
             {"on": True, "lora": "per_forward_b.safetensors", "strength": -0.7},
             {"on": True, "lora": "per_forward_dora.safetensors", "strength": 0.6}]
    blocks = [{**plain[0], "blocks": "IN*=0.5, OUT08=0"}, {**plain[1], "blocks": "M00=0.25"}, plain[2]]
    return {PLAIN: plain, BLOCKS: blocks}


def deck(model, rows):
    stack = nodes.NODE_CLASS_MAPPINGS["LoraDeckStack"].execute(rows=rows).args[0]
    patched, _, _ = nodes.NODE_CLASS_MAPPINGS["LoraDeckApply"].execute(model=model, lora_stack=stack).args
    return patched


def core(model, rows):
    for row in rows:
        (model,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, row["lora"], row["strength"])
    return model


def fresh():
    """A miniature SD1 UNet of its own (loading patches weights in place, so every load gets its own model)."""
    return hosting.mini_model("SD15", seed=0)


def forward(patcher) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 5, 64, generator=generator)
    with torch.no_grad():
        return patcher.model.apply_model(x, torch.tensor([1.0, 0.3]), c_crossattn=context).clone()


def lowvram_modules(patcher) -> dict[str, torch.nn.Module]:
    """The modules whose patched weight the host computes on each forward."""
    return {name: m for name, m in patcher.model.named_modules()
            if any(isinstance(f, comfy.model_patcher.LowVramPatch) for f in getattr(m, "weight_function", []))}


def load_partially(patcher) -> dict[str, torch.nn.Module]:
    budget = patcher.model_size() // 3
    patcher.load(CPU, lowvram_model_memory=budget, force_patch_weights=False, full_load=False)
    return lowvram_modules(patcher)


def relative(out, reference, base) -> float:
    return ((out - reference).norm() / (reference - base).norm()).item()


@pytest.fixture(scope="module")
def base_output(pack):
    patcher = fresh()
    patcher.load(CPU, full_load=True)
    return forward(patcher)


@pytest.mark.parametrize("variant", [PLAIN, BLOCKS])
def test_partially_loaded_equals_fully_patched(stack_rows, base_output, variant):
    full = deck(fresh(), stack_rows[variant])
    full.load(CPU, full_load=True)
    reference = forward(full)

    partial = deck(fresh(), stack_rows[variant])
    original = {k: v.clone() for k, v in partial.model.state_dict().items()}
    per_forward = load_partially(partial)
    patched_keys = {key for key, patches in partial.patches.items() if patches}
    per_forward_keys = {f"{name}.weight" for name in per_forward} & patched_keys
    in_place_keys = patched_keys - per_forward_keys - {f"{n}.bias" for n in per_forward}
    assert per_forward_keys and in_place_keys, (len(per_forward_keys), len(in_place_keys))
    state = partial.model.state_dict()
    assert all(torch.equal(state[key], original[key]) for key in per_forward_keys)  # not patched in place
    assert all(not torch.equal(state[key], original[key]) for key in in_place_keys)

    first, second = forward(partial), forward(partial)
    assert torch.equal(first, second)  # computing the patch never writes into the stored weight
    assert all(torch.equal(partial.model.state_dict()[key], original[key]) for key in per_forward_keys)
    error = relative(first, reference, base_output)
    print(f"{variant}: {len(per_forward_keys)} of {len(patched_keys)} patched weights per forward; "
          f"partial vs full {error:.2e} of the stack's change")
    assert error <= SAME_PATCHES


def test_partially_unloaded_equals_fully_patched(stack_rows, base_output):
    """Loaded fully, then memory runs short: the host unpatches some modules and patches them per forward."""
    full = deck(fresh(), stack_rows[PLAIN])
    full.load(CPU, full_load=True)
    reference = forward(full)
    full.partially_unload(CPU, memory_to_free=full.model_size() // 2)
    per_forward = lowvram_modules(full)
    assert per_forward
    error = relative(forward(full), reference, base_output)
    print(f"partially unloaded: {len(per_forward)} modules per forward; vs full {error:.2e}")
    assert error <= SAME_PATCHES


def test_partially_loaded_equals_host_lora_loader(stack_rows, base_output):
    rows = stack_rows[PLAIN][:2]  # the kohya files: core's loader does not read the PEFT DoRA file's keys
    host = core(fresh(), rows)
    host.load(CPU, full_load=True)
    reference = forward(host)
    host_partial = core(fresh(), rows)
    assert load_partially(host_partial)
    ours = deck(fresh(), rows)
    assert load_partially(ours)
    ours_error = relative(forward(ours), reference, base_output)
    host_error = relative(forward(host_partial), reference, base_output)
    print(f"vs core LoraLoader (full): ours partial {ours_error:.2e}, core partial {host_error:.2e}")
    assert ours_error <= CORE
