"""LoraDeckBlockView: where a LoRA acts, as a table and a heatmap in the network's shape.

With a model connected, blocks are the live model's and every module is placed exactly where the
loader would patch it; without one, blocks are read from the LoRA's own module names.
"""

from __future__ import annotations

import comfy.lora
import comfy.utils
import torch
from comfy_api.latest import io

from ..loader import block_guess, cache, energy, heatmap, plan, spec
from . import folders, patching, schema


class LoraDeckBlockView(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema.schema(
            node_id="LoraDeckBlockView",
            search_aliases=["lora", "lora blocks", "lora block weight", "lora heatmap", "where a lora acts"],
            display_name="LoRA Deck Block View",
            description="Where a LoRA acts: ‖ΔW‖ per block (exact, from the LoRA's factors), its share, and "
                        "the block weights a spec would apply, as a table and a heatmap.",
            inputs=[
                io.Combo.Input("lora_name", options=folders.lora_names()),
                io.Model.Input("model", optional=True,
                               tooltip="The model the LoRA goes on: exact block ids. Without it, blocks are "
                                       "read from the LoRA's names."),
                io.Clip.Input("clip", optional=True, tooltip="Places the text-encoder modules (BASE)."),
                io.String.Input("block_weights", default="", optional=True,
                                tooltip="A block-weight spec to preview (empty = every block 1.0)."),
            ],
            outputs=[io.String.Output(display_name="table"), io.Image.Output(display_name="heatmap")],
        )

    @classmethod
    def validate_inputs(cls, lora_name):
        return folders.validation_error(lora_name)

    @classmethod
    def fingerprint_inputs(cls, lora_name, **_):
        return folders.file_versions([lora_name])

    @classmethod
    def execute(cls, lora_name, model=None, clip=None, block_weights=""):
        loaded, (entries, block_map, notes) = cache.shared_cache.use(
            folders.resolve(lora_name), lambda loaded: (loaded, _entries(loaded, model, clip)))
        try:
            weights = spec.parse(block_weights or "", block_map)
        except spec.SpecError as e:
            raise ValueError(f"{lora_name}: block weights: {e}") from None
        table = energy.table(entries, weights)
        title = f"{loaded.name}: {block_map.architecture}"
        text = "\n".join([title, *notes, weights.summary(), "", table.format()])
        image = heatmap.render(table, f"{loaded.name[:40]} {block_map.architecture[:24]}")
        return io.NodeOutput(text, image.unsqueeze(0))


def _entries(loaded, model, clip):
    notes: list[str] = []
    entries: list[energy.KeyEnergy] = []
    if model is None:
        block_map, stand_in = block_guess.guess_from_lora(loaded.adapters, loaded.layout.base)
        notes.append("no model connected: blocks read from the LoRA's module names")
        for module_key, adapter in loaded.adapters.items():
            kind, norm, dora = energy.adapter_norm(adapter)
            entries.append(energy.KeyEnergy(stand_in[module_key], None, kind, norm, dora))
        return entries, block_map, notes
    unet_map = comfy.lora.model_lora_keys_unet(model.model, {})
    clip_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {}) if clip is not None else {}
    block_map = patching.block_map_of(model, clip)
    skipped_te, unmatched = 0, []
    for module_key, adapter in loaded.adapters.items():
        target, host_key = plan.host_key(module_key, unet_map, clip_map)
        if host_key is None:
            if loaded.layout.modules[module_key].is_text_encoder and clip is None:
                skipped_te += 1
            else:
                unmatched.append(module_key)
            continue
        model_key, offset = (host_key[0], host_key[1]) if isinstance(host_key, tuple) else (host_key, None)
        owner = clip.cond_stage_model if target == "clip" else model.model
        kind, norm, dora = energy.adapter_norm(adapter, _base_weight(owner, model_key, offset, adapter))
        entries.append(energy.KeyEnergy(model_key, offset, kind, norm, dora))
    if skipped_te:
        notes.append(f"{skipped_te} text-encoder modules not shown: connect CLIP to place them")
    if unmatched:
        notes.append(f"{len(unmatched)} modules match nothing in this model (e.g. {unmatched[0]})")
    return entries, block_map, notes


def _base_weight(owner, model_key: str, offset, adapter) -> torch.Tensor | None:
    """The weight (or the fused-weight slice) an adapter patches, when its norm needs it (DoRA, GLoRA, IA³,
    OFT, BOFT) and the model holds it as a plain float tensor; else None (measured without it)."""
    if not getattr(adapter, "needs_weight", False):
        return None
    try:
        weight = comfy.utils.get_attr(owner, model_key)
    except AttributeError:
        return None
    if type(weight) not in (torch.Tensor, torch.nn.Parameter) or not weight.is_floating_point():
        return None  # a quantized layer's stored blocks are not the weight it computes with
    if weight.device.type == "meta":
        return None
    if offset is not None:
        weight = weight.narrow(offset[0], offset[1], offset[2])
    return weight.detach()


NODES = [LoraDeckBlockView]
