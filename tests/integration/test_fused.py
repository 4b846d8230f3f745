"""The fused stack patch (one patch per weight for the whole stack) against the host's unfused math.

Reference: the host's own per-LoRA patches (comfy.lora.load_lora → one LoRAAdapter per module per file,
added per file and block ratio with add_patches), computed by the host's calculate_weight in fp32.
Tolerance: ‖ours − host‖ / ‖host change‖ ≤ 1e-5 per weight. Fixtures: kohya files from peft + diffusers.
"""

from __future__ import annotations

import comfy.lora
import comfy.lora_convert
import comfy.utils
import producers
import pytest
import torch
from comfy.weight_adapter.base import WeightAdapterBase
from compare import changed, worst_relative_error

import nodes

TOLERANCE = 1e-5
RANKS = [4, 8, 2, 6, 4, 3, 8, 5]
ALPHAS = [8, 4, 1, 6, 2, 3, 16, 5]
STRENGTHS = [(0.8, 0.6), (-0.5, 1.3), (1.2, -0.7), (0.3, 0.3), (-1.1, 0.9), (0.6, -0.2), (2.0, 1.0), (-0.25, 0.5)]
UNET_TARGETS = [producers.UNET_TARGETS, ["to_q", "to_v", "ff.net.2"], producers.UNET_TARGETS, ["to_k", "proj_in"]]
TEXT_TARGETS = [producers.TEXT_TARGETS, ["q_proj", "fc2"], None, producers.TEXT_TARGETS]


@pytest.fixture(scope="module")
def stack_files(loras_dir, pack):
    """Eight kohya files of different ranks, alphas and module sets (some without a text encoder)."""
    made = []
    for i, (rank, alpha) in enumerate(zip(RANKS, ALPHAS, strict=True)):
        unet = producers.attach_lora(producers.diffusers_sd15_unet(), UNET_TARGETS[i % 4], rank=rank, alpha=alpha,
                                     seed=100 + i)
        text_targets = TEXT_TARGETS[i % 4]
        text = (producers.attach_lora(producers.transformers_clip_text(), text_targets, rank=rank, alpha=alpha,
                                      seed=200 + i) if text_targets else None)
        made.append(producers.save_kohya_sd15(str(loras_dir / f"fused_{i}.safetensors"), unet, text))
    return made


@pytest.fixture(scope="module")
def dora_file(loras_dir, pack):
    unet = producers.attach_lora(producers.diffusers_sd15_unet(), ["to_q", "to_k", "conv1", "ff.net.2"], rank=4,
                                 alpha=8, seed=300, use_dora=True)
    return producers.save_peft_sd15(str(loras_dir / "fused_dora.safetensors"), unet, None)


def node(name):
    return nodes.NODE_CLASS_MAPPINGS[name]


def host_unfused(model, clip, loras, ratio_of=None):
    """The host's own per-file patches: load_lora per file, add_patches per file × block ratio, in order."""
    model, clip = model.clone(), clip.clone()
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    for path, strength_model, strength_clip, blocks in loras:
        loaded = comfy.lora.load_lora(comfy.lora_convert.convert_lora(comfy.utils.load_torch_file(path)), key_map,
                                      log_missing=False)
        groups: dict[float, dict] = {}
        for key, patch in loaded.items():
            model_key, offset = (key[0], key[1]) if isinstance(key, tuple) else (key, None)
            ratio = ratio_of(blocks, model_key, offset) if ratio_of else 1.0
            groups.setdefault(ratio, {})[key] = patch
        for ratio, patches in groups.items():
            model.add_patches(patches, strength_model * ratio)
            clip.add_patches(patches, strength_clip * ratio)
    return model, clip


def deck(model, clip, rows):
    (stack,) = node("LoraDeckStack").execute(rows=rows).args[:1]
    new_model, new_clip, report = node("LoraDeckApply").execute(model=model, lora_stack=stack, clip=clip).args
    return new_model, new_clip, report


def one_patch_per_weight(patcher):
    return all(len(patches) == 1 for patches in patcher.patches.values())


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_fused_stack_equals_host_unfused(stack_files, sd15, sd15_clip, n):
    rows = [{"lora": f"fused_{i}.safetensors", "strength": STRENGTHS[i][0], "clip_strength": STRENGTHS[i][1]}
            for i in range(n)]
    ours_model, ours_clip, report = deck(sd15, sd15_clip, rows)
    host_model, host_clip = host_unfused(sd15, sd15_clip, [(stack_files[i], *STRENGTHS[i], "") for i in range(n)])
    assert one_patch_per_weight(ours_model) and one_patch_per_weight(ours_clip.patcher)
    assert worst_relative_error(changed(ours_model), changed(host_model)) <= TOLERANCE
    assert worst_relative_error(changed(ours_clip.patcher), changed(host_clip.patcher)) <= TOLERANCE
    assert "matched nothing" not in report


def test_fused_stack_with_block_ratios_equals_host_unfused(stack_files, sd15, sd15_clip, pack):
    specs = ["IN04=0, OUT05=0.5, BASE=0.25", "", "M00=-1, IN01=2", "OUT00=0, OUT11=0.3, BASE=0", "IN07=0.5", "",
             "M00=0.1", "BASE=-0.5"]
    rows = [{"lora": f"fused_{i}.safetensors", "strength": STRENGTHS[i][0], "clip_strength": STRENGTHS[i][1],
             "blocks": specs[i]} for i in range(8)]
    ours_model, ours_clip, _ = deck(sd15, sd15_clip, rows)
    block_map = pack.nodes.patching.block_map_of(sd15, sd15_clip)
    parsed = {text: pack.loader.spec.parse(text, block_map) for text in specs}

    def ratio_of(text, model_key, offset):
        return parsed[text].ratio(model_key, offset)

    host_model, host_clip = host_unfused(sd15, sd15_clip, [(stack_files[i], *STRENGTHS[i], specs[i])
                                                           for i in range(8)], ratio_of)
    # Keys whose every contribution has ratio 0 are left out by both (the host registers them at strength 0).
    host_changed = {k: v for k, v in changed(host_model).items() if v.abs().max() > 0}
    host_clip_changed = {k: v for k, v in changed(host_clip.patcher).items() if v.abs().max() > 0}
    assert worst_relative_error(changed(ours_model), host_changed) <= TOLERANCE
    assert worst_relative_error(changed(ours_clip.patcher), host_clip_changed) <= TOLERANCE


class OnePatch(WeightAdapterBase):
    """One module's adapter as its own host patch, the host passing the entry's strength (the unfused way)."""

    name = "loradeck_one"

    def __init__(self, loaded_keys, weights):
        self.loaded_keys = loaded_keys
        self.weights = weights

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        self.weights[0].apply_(weight, strength)
        return weight


def unfused_deck_reference(pack, model, entries):
    """Our own per-entry patches, unfused: one OnePatch per module per entry, applied in stack order."""
    reference = model.clone()
    unet_map = comfy.lora.model_lora_keys_unet(model.model, {})
    for path, strength in entries:
        loaded = pack.loader.cache.read_lora(path)
        patches = {}
        for module_key, adapter in loaded.adapters.items():
            _, host_key = pack.loader.plan.host_key(module_key, unet_map, {})
            if host_key is not None:
                patches[host_key] = OnePatch({module_key}, [adapter])
        reference.add_patches(patches, strength)
    return reference


def test_dora_entry_falls_back_in_stack_order_pack_convention(stack_files, dora_file, sd15, pack):
    """Reference: the pack's own adapters applied one by one, unfused, in stack order (its own math; the
    DoRA adapter's math itself is tested against PEFT in test_formats.py)."""
    rows = [{"lora": "fused_0.safetensors", "strength": 0.7}, {"lora": "fused_dora.safetensors", "strength": 0.8},
            {"lora": "fused_2.safetensors", "strength": -0.5}, {"lora": "fused_6.safetensors", "strength": 1.2}]
    ours, _, report = deck(sd15, None, rows)
    reference = unfused_deck_reference(pack, sd15, [(stack_files[0], 0.7), (dora_file, 0.8),
                                                    (stack_files[2], -0.5), (stack_files[6], 1.2)])
    assert "lora+dora" in report
    assert one_patch_per_weight(ours)
    assert worst_relative_error(changed(ours), changed(reference)) <= TOLERANCE
    # The DoRA entry is not linear: applying it last instead of second gives another result.
    swapped = unfused_deck_reference(pack, sd15, [(stack_files[0], 0.7), (stack_files[2], -0.5),
                                                  (stack_files[6], 1.2), (dora_file, 0.8)])
    assert worst_relative_error(changed(ours), changed(swapped)) > 1e-4


def test_same_file_in_two_rows_is_read_once(stack_files, sd15, sd15_clip, pack):
    pack.loader.cache.shared_cache.clear()
    reads = pack.loader.files.stats
    opened, read = reads.files_opened, reads.bytes_read
    rows = [{"lora": "fused_0.safetensors", "strength": 0.5}, {"lora": "fused_0.safetensors", "strength": -0.3},
            {"lora": "fused_1.safetensors", "strength": 1.0}]
    model, _, _ = deck(sd15, None, rows)
    assert reads.files_opened - opened == 2  # one read per file, the repeated row included
    header = pack.loader.files.read_header(stack_files[0])
    unet_bytes = sum(info.nbytes for name, info in header.tensors.items() if name.startswith("lora_unet_"))
    all_bytes = sum(info.nbytes for info in header.tensors.values())
    first_file_read = pack.loader.cache.shared_cache.load(stack_files[0]).nbytes
    assert first_file_read == unet_bytes < all_bytes  # no CLIP connected: the text-encoder tensors stay on disk
    assert reads.bytes_read - read == first_file_read + pack.loader.cache.shared_cache.load(stack_files[1]).nbytes
    # Equal to the host with the repeated row as two patches.
    host_model, _ = host_unfused(sd15, sd15_clip, [(stack_files[0], 0.5, 0.0, ""), (stack_files[0], -0.3, 0.0, ""),
                                                   (stack_files[1], 1.0, 0.0, "")])
    assert worst_relative_error(changed(model), changed(host_model)) <= TOLERANCE
    # Connecting a CLIP later reads only the text-encoder tensors, once per file.
    opened = reads.files_opened
    deck(sd15, sd15_clip, rows)
    deck(sd15, sd15_clip, rows)
    assert reads.files_opened - opened == 2
    assert pack.loader.cache.shared_cache.load(stack_files[0]).nbytes == all_bytes


def test_cache_is_bounded_by_bytes(stack_files, pack):
    cache = pack.loader.cache.LoraCache(max_bytes=1)
    first = cache.load(stack_files[0])
    first.adapters_for(list(first.layout.modules)[:4])
    second = cache.load(stack_files[1])
    second.adapters_for(list(second.layout.modules)[:4])
    assert cache.nbytes == second.nbytes > 0  # the older file was dropped; the one just read is kept



HALF_CASES = [(torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32),
              (torch.float16, torch.float16)]


@pytest.fixture(scope="module")
def half_stack(stack_files, sd15, sd15_clip):
    """Ours and the host's unfused patches for a 4-LoRA stack, and the host's fp32 result per weight."""
    rows = [{"lora": f"fused_{i}.safetensors", "strength": STRENGTHS[i][0]} for i in range(4)]
    ours, _, _ = deck(sd15, None, rows)
    host, _ = host_unfused(sd15, sd15_clip, [(stack_files[i], STRENGTHS[i][0], 0.0, "") for i in range(4)])
    base = sd15.model.state_dict()
    fp32_results = {key: base[key].double() + change.double() for key, change in changed(host).items()}
    return ours, host, fp32_results


@pytest.mark.parametrize(("dtype", "intermediate"), HALF_CASES, ids=lambda d: str(d).removeprefix("torch."))
def test_half_precision_equals_host_math_at_that_dtype(half_stack, sd15, dtype, intermediate):
    """fp16 / bf16 weights patched as the host patches them: LowVramPatch (per forward) passes the weight's own
    dtype as intermediate_dtype, newer hosts' patch_weight_to_device an fp16 weight with fp32 intermediate.

    Reference: the host's own LoRAAdapter per file (product in intermediate_dtype, scaled, cast, added), by
    the host's calculate_weight on the same weight at the same dtypes. Tolerance: ‖ours − host‖ ≤ 2·eps(dtype)
    · ‖host change‖ per weight (the host rounds once per LoRA, we once per stack), and ours no farther from
    the host's fp32 result than the host's own half-precision math is.
    """
    ours, host, fp32_results = half_stack
    base = sd15.model.state_dict()
    eps = torch.finfo(dtype).eps
    assert ours.patches.keys() == fp32_results.keys()
    keys = sorted(ours.patches)[::3]  # a third of the weights (convolutions and linears), for time
    assert any(base[key].ndim == 4 for key in keys) and any(base[key].ndim == 2 for key in keys)
    for key in keys:
        patches = ours.patches[key]
        weight = base[key].to(dtype)
        target = weight.clone()
        mine = comfy.lora.calculate_weight(patches, target, key, intermediate_dtype=intermediate)
        assert mine.data_ptr() == target.data_ptr() and mine.dtype == dtype  # in place, in the weight's dtype
        theirs = comfy.lora.calculate_weight(host.patches[key], weight.clone(), key, intermediate_dtype=intermediate)
        host_change = (theirs.double() - weight.double()).norm()
        assert (mine.double() - theirs.double()).norm() <= 2 * eps * host_change, key
        exact = fp32_results[key]
        assert (mine.double() - exact).norm() <= (theirs.double() - exact).norm() * 1.05, key
