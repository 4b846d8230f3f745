"""Schedules and per-conditioning stacks, sampled by the host's own sampler on a miniature SD1 UNet.

Every test samples with `comfy.sample.sample` (the host's KSampler: euler, normal scheduler, 8 steps, cfg 3,
fixed seed) and records the denoised prediction (x0) of every step through the sampler's callback.

References, each independent of LoRA Deck's hook code:
- the same schedule built from the host's own hook nodes (comfy_extras.nodes_hooks: CreateHookLora,
  CreateHookKeyframe, CreateHookKeyframesInterpolated, SetHookKeyframes, CombineHooks2,
  ConditioningSetProperties) on the same kohya files made by peft + diffusers' converter;
- for block weights inside hooks: core's CreateHookLora on a copy of the file whose lora_up factors the test
  scaled itself by the A1111 lora-block-weight ratio of each module's model key (test_blocks.a1111_ratio);
- for step schedules: A1111's meaning (the LoRA acts on steps n, counted from 1, with start ≤ n < stop): the
  steps before `start` equal the run without the LoRA, and core keyframes whose start_percent the test places
  (by bisection of the model's percent_to_sigma) between the sigmas of the switching steps.
Tolerance: per step ‖ours − ref‖ / ‖ref‖ ≤ 1e-5 (fp32; the fused patch sums in another order than core's).
"""

from __future__ import annotations

import comfy.hooks
import comfy.lora
import comfy.model_base
import comfy.sample
import comfy.samplers
import comfy.utils
import hosting
import producers
import pytest
import torch
from a1111 import to26
from comfy_extras import nodes_hooks
from compare import changed
from safetensors.torch import save_file
from test_blocks import a1111_ratio

import nodes

TOLERANCE = 1e-5
STEPS = 8
CFG = 3.0
A = "sched_a.safetensors"
B = "sched_b.safetensors"
BLOCK_SPEC = "1,0.25,0,0.5,1,0.75,0,1,0.5,1,0,0.25,1,0.5,0.75,0,1"  # 17 values (SD1)


@pytest.fixture(scope="module")
def files(loras_dir, pack):
    a = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=4, alpha=8, seed=60,
                              init_scale=0.4)
    b = producers.attach_lora(producers.diffusers_sd15_unet(), ["to_q", "to_v", "ff.net.2", "conv1"], rank=4,
                              alpha=4, seed=61, init_scale=0.4)
    producers.save_kohya_sd15(str(loras_dir / A), a, None)
    producers.save_kohya_sd15(str(loras_dir / B), b, None)
    return loras_dir


def fresh():
    """A miniature SD1 UNet of its own (hooks patch weights in place), with the host's real SD1 noise schedule
    (hosting.fill_ randomises every buffer, model_sampling's sigmas included)."""
    patcher = hosting.mini_model("SD15", seed=0)
    base = patcher.model
    base.model_sampling = comfy.model_base.model_sampling(base.model_config, base.model_type)
    return patcher


def conds():
    generator = torch.Generator().manual_seed(3)
    positive = [[torch.randn(1, 5, 64, generator=generator), {}]]
    negative = [[torch.randn(1, 5, 64, generator=generator), {}]]
    return positive, negative


def denoised(model, positive, negative, steps=STEPS) -> list[torch.Tensor]:
    """The host's KSampler on a 16×16 latent; x0 of every step."""
    latent = torch.zeros(1, 4, 16, 16)
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(11))
    out: list[torch.Tensor] = []
    comfy.sample.sample(model, noise, steps, CFG, "euler", "normal", positive, negative, latent,
                        callback=lambda step, x0, x, total: out.append(x0.detach().clone()), disable_pbar=True,
                        seed=11)
    assert len(out) == steps
    return out


def worst_step_error(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    return max(((o - r).norm() / r.norm()).item() for o, r in zip(ours, reference, strict=True))


def step_gap(ours: list[torch.Tensor], other: list[torch.Tensor]) -> list[float]:
    return [((o - r).norm() / r.norm()).item() for o, r in zip(ours, other, strict=True)]


def stack(rows):
    return nodes.NODE_CLASS_MAPPINGS["LoraDeckStack"].execute(rows=rows).args[0]


def deck_scheduled(model, rows, positive, negative):
    node = nodes.NODE_CLASS_MAPPINGS["LoraDeckApplyScheduled"]
    out = node.execute(model=model, lora_stack=stack(rows), positive=positive, negative=negative).args
    return out[0], out[2], out[3], out[4]


def core_hook(lora_name, strength, keyframes):
    (hooks,) = nodes_hooks.CreateHookLora().create_hook(lora_name, strength, 0.0)
    (hooks,) = nodes_hooks.SetHookKeyframes().set_hook_keyframes(hooks, keyframes)
    return hooks


def core_keyframe(strength, percent, previous=None):
    return nodes_hooks.CreateHookKeyframe().create_hook_keyframe(strength, percent, previous)[0]


def core_on_both(hooks, positive, negative):
    set_props = nodes_hooks.ConditioningSetProperties()
    return (set_props.set_properties(positive, 1.0, "default", hooks=hooks)[0],
            set_props.set_properties(negative, 1.0, "default", hooks=hooks)[0])


# The schedules of the example: a composition LoRA for 0–40 %, a detail LoRA ramped in from 60 %.
ROWS = [{"on": True, "lora": A, "strength": 0.9, "schedule": {"start": 0.0, "stop": 0.4}},
        {"on": True, "lora": B, "strength": 0.8,
         "schedule": {"start": 0.6, "stop": 1.0, "from": 0.0, "to": 1.0, "curve": "linear", "keyframes": 5}}]


def core_example_hooks():
    """ROWS from core hook nodes. The ramp's keyframes lie at start + i·(stop − start)/5 (loader/schedule.py),
    so core's interpolated node gets end_percent = 0.6 + 0.4·4/5 for the same five keyframes."""
    a = core_hook(A, 0.9, core_keyframe(0.0, 0.4, core_keyframe(1.0, 0.0)))
    ramp = nodes_hooks.CreateHookKeyframesInterpolated().create_hook_keyframes(
        0.0, 1.0, "linear", 0.6, 0.6 + 0.4 * 4 / 5, 5, prev_hook_kf=core_keyframe(0.0, 0.0))[0]
    b = core_hook(B, 0.8, ramp)
    return nodes_hooks.CombineHooks().combine_hooks(a, b)[0]


def test_start_stop_and_ramp_equal_core_hook_nodes(files):
    positive, negative = conds()
    model, pos, neg, report = deck_scheduled(fresh(), ROWS, positive, negative)
    ours = denoised(model, pos, neg)
    reference = denoised(fresh(), *core_on_both(core_example_hooks(), positive, negative))
    assert worst_step_error(ours, reference) <= TOLERANCE
    assert "0…40 %" in report and "60…100 %, linear ×0→×1 in 5 keyframes" in report
    # The schedule matters at these tolerances: step 1 is A alone (as a plain patch), later steps are not.
    only_a = [{"on": True, "lora": A, "strength": 0.9}]
    model_a, _, _, _ = deck_scheduled(fresh(), only_a, positive, negative)
    gaps = step_gap(ours, denoised(model_a, positive, negative))
    assert gaps[0] <= TOLERANCE and min(gaps[3:]) > 1e-3
    assert min(step_gap(ours, denoised(fresh(), positive, negative))[:3]) > 1e-3  # A acts on the first steps


def test_ease_curve_equals_core_interpolation(files):
    rows = [{"on": True, "lora": A, "strength": 1.2,
             "schedule": {"start": 0.2, "stop": 0.9, "from": 1.0, "to": 0.2, "curve": "ease_in_out", "keyframes": 4}}]
    positive, negative = conds()
    model, pos, neg, _ = deck_scheduled(fresh(), rows, positive, negative)
    ramp = nodes_hooks.CreateHookKeyframesInterpolated().create_hook_keyframes(
        1.0, 0.2, "ease_in_out", 0.2, 0.2 + 0.7 * 3 / 4, 4, prev_hook_kf=core_keyframe(0.0, 0.0))[0]
    reference_hooks = core_hook(A, 1.2, core_keyframe(0.0, 0.9, ramp))
    reference = denoised(fresh(), *core_on_both(reference_hooks, positive, negative))
    assert worst_step_error(denoised(model, pos, neg), reference) <= TOLERANCE


def percent_between(model, high: float, low: float) -> float:
    """A start_percent whose sigma lies halfway between two step sigmas (bisection of percent_to_sigma)."""
    sampling = model.model.model_sampling
    target = (high + low) / 2
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if sampling.percent_to_sigma(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def step_sigmas(model, steps=STEPS) -> list[float]:
    sampler = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler="euler", scheduler="normal")
    return [float(s) for s in sampler.sigmas]


def test_step_schedule_means_a1111_steps(files):
    """start=3, stop=6 (A1111 lora-block-weight): the LoRA acts on steps 3, 4 and 5 of 8, counted from 1."""
    positive, negative = conds()
    rows = [{"on": True, "lora": A, "strength": 0.9, "schedule": {"start": 3, "stop": 6, "unit": "steps"}}]
    model, pos, neg, _ = deck_scheduled(fresh(), rows, positive, negative)
    ours = denoised(model, pos, neg)
    plain = denoised(fresh(), positive, negative)
    gaps = step_gap(ours, plain)
    assert max(gaps[:2]) < 1e-7 and gaps[2] > 1e-3  # steps 1, 2 without it; step 3 (same x) with it
    sigmas = step_sigmas(fresh())
    on, off = (percent_between(fresh(), sigmas[i - 1], sigmas[i]) for i in (2, 5))  # step indices 2 and 5
    hooks = core_hook(A, 0.9, core_keyframe(0.0, off, core_keyframe(1.0, on, core_keyframe(0.0, 0.0))))
    assert worst_step_error(ours, denoised(fresh(), *core_on_both(hooks, positive, negative))) <= TOLERANCE


def test_prompt_tag_steps_equal_the_row_and_core_hook_nodes(files):
    """<lora:sched_a:0.9:start=3:stop=6> from LoRA Deck Prompt, through Apply Scheduled: the same per-step
    outputs as the row {start: 3, stop: 6, unit: steps} and as core hook nodes keyed at those steps."""
    positive, negative = conds()
    prompt = nodes.NODE_CLASS_MAPPINGS["LoraDeckPrompt"].execute(text="<lora:sched_a:0.9:start=3:stop=6> cat")
    node = nodes.NODE_CLASS_MAPPINGS["LoraDeckApplyScheduled"]
    out = node.execute(model=fresh(), lora_stack=prompt.args[1], positive=positive, negative=negative).args
    from_tag = denoised(out[0], out[2], out[3])
    rows = [{"on": True, "lora": A, "strength": 0.9, "schedule": {"start": 3, "stop": 6, "unit": "steps"}}]
    from_row = denoised(*deck_scheduled(fresh(), rows, positive, negative)[:3])
    assert worst_step_error(from_tag, from_row) == 0.0
    sigmas = step_sigmas(fresh())
    on, off = (percent_between(fresh(), sigmas[i - 1], sigmas[i]) for i in (2, 5))
    hooks = core_hook(A, 0.9, core_keyframe(0.0, off, core_keyframe(1.0, on, core_keyframe(0.0, 0.0))))
    assert worst_step_error(from_tag, denoised(fresh(), *core_on_both(hooks, positive, negative))) <= TOLERANCE
    assert step_gap(from_tag, denoised(fresh(), positive, negative))[2] > 1e-3


def test_step_schedule_follows_the_step_count(files):
    """The same row on 5 steps: steps 3, 4, 5 (to the end); resolved against that run's own sigmas."""
    positive, negative = conds()
    rows = [{"on": True, "lora": A, "strength": 0.9, "schedule": {"start": 3, "unit": "steps"}}]
    model, pos, neg, _ = deck_scheduled(fresh(), rows, positive, negative)
    ours = denoised(model, pos, neg, steps=5)
    sigmas = step_sigmas(fresh(), steps=5)
    on = percent_between(fresh(), sigmas[1], sigmas[2])
    hooks = core_hook(A, 0.9, core_keyframe(1.0, on, core_keyframe(0.0, 0.0)))
    reference = denoised(fresh(), *core_on_both(hooks, positive, negative), steps=5)
    assert worst_step_error(ours, reference) <= TOLERANCE
    assert step_gap(ours, denoised(fresh(), positive, negative, steps=5))[1] < 1e-7


def test_unscheduled_rows_are_lora_deck_apply(files):
    """No schedule: the plain path itself (same patches as LoraDeckApply, conditionings passed through).
    Mixed: the unscheduled rows' plain patches are exactly LoraDeckApply's of those rows."""
    positive, negative = conds()
    rows = [{"on": True, "lora": A, "strength": 0.9}, {"on": True, "lora": B, "strength": -0.6, "blocks": "MIDD"}]
    base = fresh()
    apply = nodes.NODE_CLASS_MAPPINGS["LoraDeckApply"].execute(model=base, lora_stack=stack(rows)).args[0]
    model, pos, neg, _ = deck_scheduled(base, rows, positive, negative)
    assert pos is positive and neg is negative
    assert model.patches.keys() == apply.patches.keys()
    ours, theirs = changed(model), changed(apply)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    mixed = [rows[0], {**rows[1], "schedule": {"start": 0.5}}]
    model, pos, _, _ = deck_scheduled(base, mixed, positive, negative)
    only_a = nodes.NODE_CLASS_MAPPINGS["LoraDeckApply"].execute(model=base, lora_stack=stack(rows[:1])).args[0]
    ours, theirs = changed(model), changed(only_a)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert "hooks" in pos[0][1] and "hooks" not in positive[0][1]
    always = [rows[0], {**rows[1], "schedule": {"start": 0.0, "stop": 1.0}}]  # a schedule that changes nothing
    model, pos, _, _ = deck_scheduled(base, always, positive, negative)
    assert pos is positive and model.patches.keys() == apply.patches.keys()


def prescaled_file(loras_dir, source: str, target: str, model, lwei26: list[float]) -> str:
    """A copy of a kohya file with each module's lora_up scaled by the A1111 ratio of its model key."""
    lora = comfy.utils.load_torch_file(str(loras_dir / source), safe_load=True)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    scaled = {}
    for key, tensor in lora.items():
        module = key.split(".")[0]
        if key.endswith(".lora_up.weight"):
            model_key = key_map[module]
            tensor = tensor * a1111_ratio(model_key if isinstance(model_key, str) else model_key[0], lwei26)
        scaled[key] = tensor.contiguous()
    save_file(scaled, str(loras_dir / target))
    return target


def test_per_conditioning_stack_with_block_weights(files):
    """LoraDeckHooks on the positive conditioning only (ConditioningSetProperties), a 17-value block vector
    and a schedule, against core's CreateHookLora of the file pre-scaled per block by the A1111 ratio."""
    positive, negative = conds()
    lwei = list(to26([float(v) for v in BLOCK_SPEC.split(",")]).values())
    reference_name = prescaled_file(files, A, "sched_a_prescaled.safetensors", fresh(), lwei)
    rows = [{"on": True, "lora": A, "strength": 0.9, "blocks": BLOCK_SPEC, "schedule": {"start": 0.25}}]
    hooks, report = nodes.NODE_CLASS_MAPPINGS["LoraDeckHooks"].execute(model=fresh(), lora_stack=stack(rows)).args
    assert "25…100 %" in report
    set_props = nodes_hooks.ConditioningSetProperties()
    ours = denoised(fresh(), set_props.set_properties(positive, 1.0, "default", hooks=hooks)[0], negative)
    reference_hooks = core_hook(reference_name, 0.9, core_keyframe(1.0, 0.25, core_keyframe(0.0, 0.0)))
    reference = denoised(fresh(), set_props.set_properties(positive, 1.0, "default", hooks=reference_hooks)[0],
                         negative)
    assert worst_step_error(ours, reference) <= TOLERANCE
    on_both = denoised(fresh(), *core_on_both(reference_hooks, positive, negative))
    assert max(step_gap(ours, on_both)) > 1e-3  # the negative's passes ran without the LoRA


def test_hooks_carry_the_plain_fused_patches(files):
    """Inside the hook, each weight's patch is the FusedStackPatch the plain path registers (block weights
    folded in): the hook's weights equal LoraDeckApply's patches of the same rows, key for key."""
    rows = [{"on": True, "lora": A, "strength": 0.9, "blocks": BLOCK_SPEC},
            {"on": True, "lora": B, "strength": -0.4, "blocks": "OUTS"}]
    model = fresh()
    hooks, _ = nodes.NODE_CLASS_MAPPINGS["LoraDeckHooks"].execute(model=model, lora_stack=stack(rows)).args
    (hook,) = hooks.get_type(comfy.hooks.EnumHookType.Weight)
    apply = nodes.NODE_CLASS_MAPPINGS["LoraDeckApply"].execute(model=model, lora_stack=stack(rows)).args[0]
    base = model.model.state_dict()
    for key, patches in apply.patches.items():
        (patch,) = [p[1] for p in patches]
        hooked = hook.weights[key]
        zero = torch.zeros_like(base[key])
        assert torch.equal(hooked.calculate_weight(zero.clone(), key, 1.0, 1.0, None, None),
                           patch.calculate_weight(zero.clone(), key, 1.0, 1.0, None, None))
    assert set(hook.weights) == set(apply.patches)


def test_lora_deck_apply_and_bake_name_the_schedules_they_do_not_apply(files):
    """LoraDeckApply and LoraDeckBake apply every row for the whole sampling; a scheduled row is said so."""
    rows = [{"on": True, "lora": A, "strength": 0.9}, {"on": True, "lora": B, "strength": 0.5,
                                                       "schedule": {"start": 0.6}}]
    node = nodes.NODE_CLASS_MAPPINGS["LoraDeckApply"]
    report = node.execute(model=fresh(), lora_stack=stack(rows)).args[2]
    assert "schedules not applied by this node, these LoRAs act on every step" in report
    assert f"{B}: 60…100 %" in report and f"{A}: " not in report.split("schedules not applied")[1]
    plain = node.execute(model=fresh(), lora_stack=stack(rows[:1])).args[2]
    assert "schedule" not in plain
    baked = nodes.NODE_CLASS_MAPPINGS["LoraDeckBake"].execute(model=fresh(), lora_stack=stack(rows),
                                                               filename="sched_baked", rank=4).args[0]
    assert f"schedules not baked, the file applies these LoRAs on every step:\n{B}: 60…100 %" in baked


C = "sched_clip.safetensors"


@pytest.fixture(scope="module")
def clip_file(files):
    unet = producers.attach_lora(producers.diffusers_sd15_unet(), ["to_q", "to_v"], rank=4, alpha=8, seed=62)
    text = producers.attach_lora(producers.transformers_clip_text(), producers.TEXT_TARGETS, rank=4, alpha=8,
                                 seed=63, init_scale=0.4)
    producers.save_kohya_sd15(str(files / C), unet, text)
    return C


def hooked_encode(hooks, text="a photo of a cat"):
    """SetClipHooks (apply to conds, no clip schedule) then CLIPTextEncode, as a core workflow wires them."""
    clip = hosting.mini_clip_sd1(seed=1)
    (clip,) = nodes_hooks.SetClipHooks().apply_hooks(clip, schedule_clip=False, apply_to_conds=True, hooks=hooks)
    (conditioning,) = nodes.NODE_CLASS_MAPPINGS["CLIPTextEncode"]().encode(clip, text)
    return conditioning


def test_clip_hooks_equal_core_create_hook_lora(clip_file):
    """LoraDeckHooks with a clip strength, through SetClipHooks: the text encoder's output equals the same LoRA
    from core's CreateHookLora, and the conditioning carries the hooks for the model's passes."""
    rows = [{"on": True, "lora": clip_file, "strength": 0.7, "clip_strength": -0.6}]
    hooks, _ = nodes.NODE_CLASS_MAPPINGS["LoraDeckHooks"].execute(
        model=fresh(), lora_stack=stack(rows), clip=hosting.mini_clip_sd1(seed=1)).args
    (core,) = nodes_hooks.CreateHookLora().create_hook(clip_file, 0.7, -0.6)
    ours, reference = hooked_encode(hooks), hooked_encode(core)
    plain = nodes.NODE_CLASS_MAPPINGS["CLIPTextEncode"]().encode(hosting.mini_clip_sd1(seed=1), "a photo of a cat")[0]
    for key in (0, "pooled_output"):
        o, r, p = [(c[0][0] if key == 0 else c[0][1][key]) for c in (ours, reference, plain)]
        assert ((o - r).norm() / r.norm()).item() <= TOLERANCE, key
        assert ((o - p).norm() / p.norm()).item() > 1e-3, key  # the LoRA changed the text encoder
    assert "hooks" in ours[0][1]
