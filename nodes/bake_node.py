"""LoraDeckBake: a stack written as one LoRA file (id and inputs stable)."""

from __future__ import annotations

from comfy_api.latest import io

from . import baking, schema
from .lora_nodes import LORA_STACK


class LoraDeckBake(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema.schema(
            node_id="LoraDeckBake",
            search_aliases=["lora", "bake lora", "merge loras", "save lora", "combine loras"],
            display_name="LoRA Deck Bake",
            description="Bake a LORA_STACK (strengths, toggles, block weights) into one kohya-layout LoRA file in "
                        "your loras folder, exact when the ranks fit the budget.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The model the stack is meant for (its key maps and blocks)."),
                LORA_STACK.Input("lora_stack"),
                io.String.Input("filename", default="baked/my-look",
                                tooltip="Inside your loras folder; .safetensors is added."),
                io.Int.Input("rank", default=64, min=1, max=4096,
                             tooltip="Rank budget per weight. Stacks whose ranks sum to at most this are baked "
                                     "exactly; others are truncated by SVD (the report gives the error)."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Off: an existing file is never replaced."),
                io.Clip.Input("clip", optional=True),
            ],
            outputs=[io.String.Output(display_name="report"), io.String.Output(display_name="lora_name")],
        )

    @classmethod
    def validate_inputs(cls, filename, overwrite=False, **_):
        return baking.refusal(filename, overwrite) or True

    @classmethod
    def execute(cls, model, lora_stack, filename, rank, overwrite=False, clip=None):
        report, name = baking.bake_stack(model, clip, lora_stack, filename, rank, overwrite)
        return io.NodeOutput(report, name, ui={"text": [report]})


NODES = [LoraDeckBake]
