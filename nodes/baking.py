"""Baking a stack into one LoRA file: the host-facing half (loader/bake.py does the math).

The stack is applied as LoRA Deck Apply applies it (nodes/patching.py), so block weights, toggles and
every adapter type mean exactly what they mean there; then each patched weight, one at a time, is turned
into kohya-layout factors named by the host's own key maps, so the host's core LoraLoader reads the file
back onto the same weights. The file is written atomically inside the first loras folder.
"""

from __future__ import annotations

import json
import os

import comfy.lora
import comfy.model_management
import comfy.utils
import folder_paths

from ..loader import atomic, bake, hashes, names, safetensors_out, stack
from . import folders, hooks, patching

SUFFIX = ".safetensors"
# modelspec.architecture and ss_base_model_version of the host's model classes (others: the class name).
ARCHITECTURES = {
    "SD15": ("stable-diffusion-v1", "sd_v1"), "SD20": ("stable-diffusion-v2-768-v", "sd_v2"),
    "SDXL": ("stable-diffusion-xl-v1-base", "sdxl_base_v1-0"), "SD3": ("stable-diffusion-v3-medium", "sd3"),
    "Flux": ("flux-1-dev", "flux1"), "FluxSchnell": ("flux-1-schnell", "flux1"), "Chroma": ("chroma", "chroma"),
}


class BakeError(ValueError):
    pass


def target(filename: str) -> tuple[str, str]:
    """(name as pickers list it, full path) of the file to write: relative, inside the first loras folder."""
    try:
        name = names.normalise(str(filename).strip())
    except names.LoraNameError as e:
        raise BakeError(str(e).replace("the LoRA name", "the file name")) from None
    if not name.lower().endswith(SUFFIX):
        name += SUFFIX
    root = os.path.realpath(folders.lora_roots()[0])
    path = os.path.join(root, *name.split("/"))
    parent = os.path.realpath(os.path.dirname(path))
    if os.path.commonpath([root, parent]) != root:  # a symlinked subfolder pointing elsewhere
        raise BakeError(f"{name!r} would be written outside your loras folder {root}")
    return name, path


def refusal(filename: str, overwrite: bool) -> str | None:
    """Why this file would not be written (shown before the workflow runs), or None."""
    try:
        name, path = target(filename)
    except BakeError as e:
        return str(e)
    if os.path.lexists(path) and not overwrite:
        return f"{name} already exists; turn on overwrite to replace it"
    return None


def bake_stack(model, clip, lora_stack, filename: str, rank: int, overwrite: bool) -> tuple[str, str]:
    """Write the stack as one LoRA; returns (the report, the new file's name as pickers list it)."""
    problem = refusal(filename, overwrite)
    if problem:
        raise BakeError(problem)
    name, path = target(filename)
    entries = stack.entries_from_stack(lora_stack)
    if not entries:
        raise BakeError("the stack is empty: nothing to bake")
    new_model, new_clip, _ = patching.apply_stack(model, clip, entries)
    jobs = _jobs(model, new_model, comfy.lora.model_lora_keys_unet(model.model, {}), "lora_unet_")
    if clip is not None:
        jobs += _jobs(clip.patcher, new_clip.patcher, comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {}),
                      "lora_te")
    tensors, results, unnamed = _bake_jobs(jobs, rank)
    if not tensors:
        raise BakeError("the stack changes no weight of this model: nothing to bake")
    metadata = provenance(model, entries, rank, results, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with atomic.open_atomic(path, replace=overwrite) as f:
            safetensors_out.write(f, tensors, metadata)
    except atomic.FileExistsRefused as e:
        raise BakeError(str(e)) from None
    folder_paths.filename_list_cache.pop("loras", None)  # the new file appears in pickers at once
    text = report(name, entries, rank, results, unnamed, patching.block_map_of(model, clip))
    return text + hooks.ignored_schedules(entries, "schedules not baked, the file applies these LoRAs on every "
                                                   "step"), name


def _jobs(patcher, patched, key_map: dict, prefix: str) -> list[tuple[str, str, object, list]]:
    """(host key, kohya name, weight, [WeightPatch]) for every weight the stack patched on this patcher."""
    names_of = {key: n for n, key in key_map.items() if isinstance(key, str) and n.startswith(prefix)}
    for lora_name, key in key_map.items():
        if isinstance(key, str):
            names_of.setdefault(key, lora_name)
    jobs = []
    for key, patches in patched.patches.items():
        ours = [p for p in patches[len(patcher.patches.get(key, [])):] if isinstance(p[1], patching.FusedStackPatch)]
        if not ours:
            continue
        weight_key = key[:-len(".bias")] + ".weight" if key.endswith(".bias") else key
        lora_name = names_of.get(weight_key)
        weight = comfy.utils.get_attr(patched.model, key)
        jobs.append((key, lora_name, weight, [_weight_patch(p) for p in ours]))
    return sorted(jobs, key=lambda job: job[0])


def _weight_patch(host_patch) -> bake.WeightPatch:
    strength, patch, _, offset, function = host_patch[:5]
    uses_key_function, *packed = patch.weights
    return bake.WeightPatch(packed, float(strength), offset, function if uses_key_function else None)


def _bake_jobs(jobs, rank: int):
    """One weight's change at a time, with the host's progress bar: weights done of all."""
    device = comfy.model_management.get_torch_device()  # the SVDs run where the host computes
    progress = comfy.utils.ProgressBar(len(jobs))
    tensors, results, unnamed = {}, {}, []
    for key, lora_name, weight, patches in jobs:
        if lora_name is None:
            unnamed.append(key)
        else:
            baked = bake.bake_weight(weight.to(device), patches, rank)
            if baked is not None:
                baked = baked.to("cpu")
                tensors.update(bake.kohya_tensors(lora_name, baked, bias=key.endswith(".bias")))
                results[key] = baked
        progress.update(1)
    return tensors, results, unnamed


def provenance(model, entries, rank: int, results: dict, name: str) -> dict[str, str]:
    """Metadata naming the sources and how they were baked, in keys other tools read (modelspec, ss_) and ours."""
    architecture = patching.architecture_of(model)
    spec_id, kohya_base = ARCHITECTURES.get(architecture, (architecture.lower(), architecture.lower()))
    sources = []
    for entry in entries:
        sha = folders.hash_cache().get(folders.resolve(entry.lora_name))
        sources.append({"name": entry.lora_name, "sha256": sha, "autov2": hashes.autov2(sha),
                        "strength_model": entry.strength_model, "strength_clip": entry.strength_clip,
                        "blocks": entry.blocks})
    ranks = [b.rank for b in results.values()]
    summary = {"rank_budget": rank, "exact": all(b.exact for b in results.values()),
               "relative_error": bake.total_relative_error(list(results.values())), "weights": len(results)}
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{spec_id}/lora",
        "modelspec.title": os.path.splitext(os.path.basename(name))[0],
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(max(ranks, default=0)),
        "ss_network_alpha": str(max(ranks, default=0)),
        "ss_base_model_version": kohya_base,
        "loradeck.baked_from": json.dumps(sources),
        "loradeck.bake": json.dumps(summary),
    }


def report(name: str, entries, rank: int, results: dict, unnamed: list[str], block_map) -> str:
    total = bake.total_relative_error(list(results.values()))
    lines = [f"Baked {len(entries)} LoRA(s) into {name}: {len(results)} weights, rank budget {rank}, "
             + ("exact" if all(b.exact for b in results.values()) else f"relative error {total:.3g} in total")]
    worst = sorted(((b.relative_error, key) for key, b in results.items() if not b.exact), reverse=True)[:5]
    for error, key in worst:
        lines.append(f"  {block_map.block_of(key) or '-'} {key}: relative error {error:.3g}")
    if unnamed:
        lines.append(f"  not baked ({len(unnamed)} weights have no LoRA name in the host's key map), "
                     f"e.g. {unnamed[0]}")
    return "\n".join(lines)
