"""The three contract nodes: LoraDeckLoader, LoraDeckStack, LoraDeckApply (ids never change)."""

from __future__ import annotations

from comfy_api.latest import io

from ..loader import split_qkv, stack
from . import folders, hooks, patching, schema, triggers

LORA_STACK = io.Custom("LORA_STACK")
LORADECK_ROWS = io.Custom("LORADECK_ROWS")


def _strength(name: str, tooltip: str, optional: bool = False):
    return io.Float.Input(name, default=1.0, min=-100.0, max=100.0, step=0.01, optional=optional, tooltip=tooltip)


def _ui(reports: list[patching.LoraReport]) -> dict:
    """What the web UI shows on rows after a run: each LoRA's base model and any mismatch with the model."""
    return {"loradeck": [{"lora": r.name, "base": r.base, "note": r.note} for r in reports]}


def _skip_unloadable():
    return io.Boolean.Input("skip_unloadable", default=False, optional=True,
                            tooltip="On: a LoRA that cannot be loaded (broken file, unknown layout, nothing matching "
                                    "this model) is left out and named in the report. Off: the workflow stops there.")


def _split_qkv_scale():
    return io.Combo.Input("split_qkv_scale", options=list(split_qkv.CONVENTIONS), default="auto", optional=True,
                          tooltip="kohya Flux files trained with split_qkv (separate q/k/v LoRAs saved fused). "
                                  "trained: the scale they were trained at. core: as ComfyUI core, Forge and "
                                  "sd-scripts' own loader apply them (1/3 of it, 1/4 for linear1). auto: trained "
                                  "when the file's metadata shows sd-scripts split_qkv training, else core (files "
                                  "converted from ai-toolkit are meant for core's scale).")


def _trigger_words_output():
    return io.String.Output(display_name="trigger_words",
                            tooltip="Trigger words of the LoRAs that run (disabled rows and strength 0 give none): "
                                    "pinned words, .civitai.info / .metadata.json sidecars, the file's metadata.")


class LoraDeckLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema.schema(
            node_id="LoraDeckLoader",
            search_aliases=["lora", "load lora", "lora loader", "lycoris", "lora block weight", "lbw"],
            display_name="LoRA Deck Loader",
            description="Apply one LoRA of any format to a model (and text encoder), with optional block weights.",
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("lora_name", options=folders.lora_names()),
                _strength("strength_model", "Multiplier on the LoRA's change to the diffusion model."),
                io.Clip.Input("clip", optional=True),
                _strength("strength_clip", "Multiplier on the LoRA's change to the text encoder.", optional=True),
                io.String.Input("block_weights", default="", optional=True,
                                tooltip="Empty = every block 1.0. A1111 vectors, presets or IN04=0, OUT*=0.5."),
                _skip_unloadable(),
                _split_qkv_scale(),
            ],
            outputs=[io.Model.Output(), io.Clip.Output(), io.String.Output(display_name="report"),
                     _trigger_words_output()],
        )

    @classmethod
    def validate_inputs(cls, lora_name):
        return folders.validation_error(lora_name)

    @classmethod
    def fingerprint_inputs(cls, lora_name, **_):
        return folders.file_versions([lora_name])

    @classmethod
    def execute(cls, model, lora_name, strength_model, clip=None, strength_clip=1.0, block_weights="",
                skip_unloadable=False, split_qkv_scale="auto"):
        if strength_model == 0 and (clip is None or strength_clip == 0):
            return io.NodeOutput(model, clip, f"{lora_name}: both strengths are 0; nothing applied", "")
        entry = stack.StackEntry(lora_name, strength_model, strength_clip, block_weights or "")
        new_model, new_clip, reports = patching.apply_stack(model, clip, [entry], skip_unloadable=skip_unloadable,
                                                            split_qkv_scale=split_qkv_scale)
        ran = [entry] if any(not r.error for r in reports) else []  # skipped (skip_unloadable): no words
        return io.NodeOutput(new_model, new_clip, patching.report_text(reports), triggers.for_entries(ran),
                             ui=_ui(reports))


class LoraDeckStack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema.schema(
            node_id="LoraDeckStack",
            search_aliases=["lora", "lora stack", "multiple loras", "lora list", "stack loras"],
            display_name="LoRA Deck Stack",
            description="Rows of LoRAs, each with model and clip strength, a toggle and block weights. "
                        "Extends an incoming LORA_STACK from any pack.",
            inputs=[
                LORA_STACK.Input("lora_stack", optional=True),
                # A default lets the frontend reset the rows (newer frontends' "Reset to default"): no rows.
                LORADECK_ROWS.Input("rows", optional=True, extra_dict={"default": []}),
            ],
            outputs=[LORA_STACK.Output(display_name="LORA_STACK"), _trigger_words_output()],
        )

    @classmethod
    def validate_inputs(cls, rows=None):
        try:
            for row in stack.rows_from_value(rows):
                if row.on and row.lora:
                    folders.resolve_checked(row.lora)
        except (stack.StackError, ValueError) as e:
            return str(e)
        return True

    @classmethod
    def fingerprint_inputs(cls, rows=None, **_):
        try:
            return folders.file_versions(row.lora for row in stack.rows_from_value(rows) if row.on and row.lora)
        except (stack.StackError, ValueError) as e:
            return str(e)

    @classmethod
    def execute(cls, lora_stack=None, rows=None):
        entries = stack.build_stack(lora_stack, stack.rows_from_value(rows))
        return io.NodeOutput(entries, triggers.for_entries(entries))


class LoraDeckApply(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema.schema(
            node_id="LoraDeckApply",
            search_aliases=["lora", "apply lora stack", "lora stack", "load lora stack"],
            display_name="LoRA Deck Apply Stack",
            description="Apply a LORA_STACK (from LoRA Deck or any other pack) to a model and text encoder.",
            inputs=[io.Model.Input("model"), LORA_STACK.Input("lora_stack"), io.Clip.Input("clip", optional=True),
                    _skip_unloadable(), _split_qkv_scale()],
            outputs=[io.Model.Output(), io.Clip.Output(), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, model, lora_stack, clip=None, skip_unloadable=False, split_qkv_scale="auto"):
        entries = stack.entries_from_stack(lora_stack)
        new_model, new_clip, reports = patching.apply_stack(model, clip, entries, skip_unloadable=skip_unloadable,
                                                            split_qkv_scale=split_qkv_scale)
        return io.NodeOutput(new_model, new_clip, patching.report_text(reports) + _unscheduled_note(entries),
                             ui=_ui(reports))


def _unscheduled_note(entries: list[stack.StackEntry]) -> str:
    return hooks.ignored_schedules(entries, "schedules not applied by this node, these LoRAs act on every step "
                                            "(LoRA Deck Apply Scheduled Stack applies them)")


NODES = [LoraDeckLoader, LoraDeckStack, LoraDeckApply]
