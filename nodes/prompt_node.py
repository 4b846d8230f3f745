"""LoraDeckPrompt: LoRAs picked in the prompt text (`<lora:name:multiplier>`), as a LORA_STACK.

The parser is loader.prompt_tags, the name lookup loader.names.resolve_tag_name, the metadata strings
loader.image_metadata; this node only joins them to the host's folders and hash cache.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..loader import files, image_metadata, names, prompt_tags, stack
from . import folders, schema, triggers
from .lora_nodes import LORA_STACK

SCHEDULE_NOTE = ("A1111 steps: applied by LoRA Deck Apply Scheduled Stack and LoRA Deck Stack as Hooks; "
                 "LoRA Deck Apply Stack applies the LoRA on every step")


class LoraDeckPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema.schema(
            node_id="LoraDeckPrompt",
            search_aliases=["lora", "lora prompt", "lora tags", "<lora:", "prompt lora", "a1111 lora"],
            display_name="LoRA Deck Prompt",
            description="LoRAs written in the prompt as A1111 does (<lora:name:multiplier>, te=, unet=, lbw=). "
                        "Outputs the text without the tags and a LORA_STACK: the incoming stack first, then "
                        "the tags in order.",
            inputs=[
                io.String.Input("text", multiline=True, default="",
                                tooltip="Prompt text with <lora:name:multiplier> tags. name: the file's path, "
                                        "its name without folders or extension, or its metadata alias."),
                LORA_STACK.Input("lora_stack", optional=True),
            ],
            outputs=[
                io.String.Output(display_name="text"),
                LORA_STACK.Output(display_name="LORA_STACK"),
                io.String.Output(display_name="trigger_words"),
                io.String.Output(display_name="image_metadata"),
                io.String.Output(display_name="image_saver_hashes"),
                io.String.Output(display_name="report"),
            ],
        )

    @classmethod
    def validate_inputs(cls, text=None):
        if not isinstance(text, str):
            return True  # linked: checked when the node runs
        try:
            _tags_to_entries(prompt_tags.parse(text)[1])
        except (prompt_tags.PromptTagError, names.LoraNameError, files.LoraFileError) as e:
            return str(e)
        return True

    @classmethod
    def fingerprint_inputs(cls, text=None, **_):
        """The text and the version on disk of each file its tags name: a replaced file runs the node again."""
        try:
            tags = prompt_tags.parse(text)[1] if isinstance(text, str) else []
            wanted = [folders.resolve_tag_name(tag.name) for tag in tags]
        except (prompt_tags.PromptTagError, names.LoraNameError) as e:
            return str(e)
        return folders.file_versions(wanted)

    @classmethod
    def execute(cls, text, lora_stack=None):
        cleaned, tags = prompt_tags.parse(text)
        entries = stack.entries_from_stack(lora_stack) + _tags_to_entries(tags)
        ran, elsewhere = [], []
        for e in entries:
            try:
                path = folders.resolve(e.lora_name)
            except names.LoraNameError:
                elsewhere.append(e.lora_name)  # another pack's name for a file not here
                continue
            ran.append(image_metadata.RanLora(e.lora_name, folders.hash_cache().get(path), e.strength_model,
                                              e.strength_clip))
        report = _report(entries, len(entries) - len(tags))
        if elsewhere:
            report += "\nnot in your loras folders, so left out of the metadata: " + ", ".join(elsewhere)
        return io.NodeOutput(cleaned, entries, triggers.for_entries(entries), image_metadata.a1111_text(ran),
                             image_metadata.image_saver_hashes(ran), report)


def _tags_to_entries(tags: list[prompt_tags.Tag]) -> list[prompt_tags.TagEntry]:
    entries = []
    for tag in tags:
        try:
            relative = folders.resolve_tag_name(tag.name)
            folders.resolve_checked(relative)
        except (names.LoraNameError, files.LoraFileError) as e:
            error = files.LoraFileError if isinstance(e, files.LoraFileError) else names.LoraNameError
            raise error(*_with_tag(e, tag)) from None
        entries.append(tag.entry(relative))
    return entries


def _with_tag(error: Exception, tag: prompt_tags.Tag) -> tuple:
    where = f"tag {tag.text!r} at character {tag.position}: "
    if isinstance(error, files.LoraFileError):
        return error.path, where + error.problem
    return (where + str(error),)


def _report(entries: list[stack.StackEntry], incoming: int) -> str:
    lines = []
    for i, entry in enumerate(entries):
        source = "stack" if i < incoming else f"tag at character {getattr(entry, 'position', '?')}"
        line = (f"{entry.lora_name}: model {prompt_tags.number_text(entry.strength_model)}, clip "
                f"{prompt_tags.number_text(entry.strength_clip)} ({source})")
        if entry.blocks:
            line += f", blocks {entry.blocks}"
        start, stop = getattr(entry, "start", None), getattr(entry, "stop", None)
        if start is not None or stop is not None:
            line += f", steps {'' if start is None else start}…{'' if stop is None else stop}: {SCHEDULE_NOTE}"
        lines.append(line)
    return "\n".join(lines) if lines else "no LoRA in the text or the stack"


NODES = [LoraDeckPrompt]
