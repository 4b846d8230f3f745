"""LoraDeckHooks and LoraDeckApplyScheduled: a stack that acts on part of the sampling, or on one prompt.

Both turn a stack into the host's own hooks (nodes/hooks.py), so the host's sampler runs them; neither
has a sampler of its own. Row schedules: loader/schedule.py.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..loader import stack
from . import hooks, patching, schema
from .lora_nodes import LORA_STACK, _skip_unloadable, _split_qkv_scale, _ui


def _report(reports: list[patching.LoraReport], entries: list[stack.StackEntry]) -> str:
    text = patching.report_text(reports)
    scheduled = hooks.describe(entries)
    return f"{text}\nscheduled:\n{scheduled}" if scheduled else text


class LoraDeckHooks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema.schema(
            node_id="LoraDeckHooks",
            search_aliases=["lora hooks", "hook lora", "lora schedule", "regional lora", "conditioning lora",
                            "lora keyframes"],
            display_name="LoRA Deck Stack as Hooks",
            description="A LORA_STACK as the host's HOOKS, for SetClipHooks, ConditioningSetProperties and the "
                        "other core hook nodes: the LoRAs then act only on the conditionings that carry the "
                        "hooks, with each row's block weights and schedule. The model (and text encoder) give "
                        "the key maps and block table; sample with the same model.",
            inputs=[
                io.Model.Input("model", tooltip="The model the hooks will sample with (its keys and blocks)."),
                LORA_STACK.Input("lora_stack"),
                io.Clip.Input("clip", optional=True,
                              tooltip="The text encoder, for the rows' clip strength (apply with SetClipHooks)."),
                _skip_unloadable(),
                _split_qkv_scale(),
            ],
            outputs=[io.Hooks.Output(display_name="HOOKS"), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, model, lora_stack, clip=None, skip_unloadable=False, split_qkv_scale="auto"):
        entries = stack.entries_from_stack(lora_stack)
        group, reports = hooks.stack_hooks(model, clip, entries, skip_unloadable, split_qkv_scale)
        return io.NodeOutput(group, _report(reports, entries), ui=_ui(reports))


class LoraDeckApplyScheduled(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema.schema(
            node_id="LoraDeckApplyScheduled",
            search_aliases=["lora schedule", "scheduled lora", "lora start stop", "lora steps", "lora ramp",
                            "apply lora stack"],
            display_name="LoRA Deck Apply Scheduled Stack",
            description="Apply a LORA_STACK whose rows may act on part of the sampling. Rows without a schedule "
                        "are applied exactly as LoRA Deck Apply Stack does (plain patches). Scheduled rows act on "
                        "the diffusion model through the host's hooks, set on the positive and negative "
                        "conditionings (wire them to the sampler); their text-encoder strength is a plain patch "
                        "on the CLIP, as in A1111, which encodes the prompt once before the first step.",
            inputs=[
                io.Model.Input("model"),
                LORA_STACK.Input("lora_stack"),
                io.Clip.Input("clip", optional=True),
                io.Conditioning.Input("positive", optional=True),
                io.Conditioning.Input("negative", optional=True),
                _skip_unloadable(),
                _split_qkv_scale(),
            ],
            outputs=[io.Model.Output(), io.Clip.Output(), io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative"), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, model, lora_stack, clip=None, positive=None, negative=None, skip_unloadable=False,
                split_qkv_scale="auto"):
        entries = stack.entries_from_stack(lora_stack)
        new_model, new_clip, (new_positive, new_negative), reports = hooks.apply_scheduled(
            model, clip, entries, [positive, negative], skip_unloadable, split_qkv_scale)
        report = _report(reports, entries)
        if hooks.describe(entries) and positive is None and negative is None:
            report += "\nno conditioning given: the scheduled rows act nowhere (wire positive and negative)"
        return io.NodeOutput(new_model, new_clip, new_positive, new_negative, report, ui=_ui(reports))


NODES = [LoraDeckHooks, LoraDeckApplyScheduled]
