"""The shipped example workflow, converted from its saved UI form and run through the host's own executor.

Models: the demo's (scripts/demo_assets.py: a random SD1 checkpoint the host detects as SD15 and three LoRAs
made by kohya/PEFT/LyCORIS producers), built once into demo-output/models and shared with `make demo`.
The sampler runs 2 steps at 64×64 px to keep this quick.
"""

from __future__ import annotations

import copy
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import demo_assets  # noqa: E402
import demo_workflow  # noqa: E402
import hosting  # noqa: E402

STEPS = 2


def lora_modules(path: Path) -> tuple[int, int]:
    """(UNet modules, text-encoder modules) in a LoRA file, counted from its tensor names alone."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    modules = {key.rsplit(suffix, 1)[0] for key in keys for suffix in (".lora_down.weight", ".lora_A.weight")
               if key.endswith(suffix)}
    text = {m for m in modules if m.startswith(("lora_te", "text_encoder"))}
    return len(modules) - len(text), len(text)


def strengths(patcher) -> Counter:
    """How many module changes at each strength (inside LoRA Deck's one fused patch per weight)."""
    fused = (patch[1].weights[1:] for patches in patcher.patches.values() for patch in patches)
    return Counter(round(c, 6) for packed in fused for c in hosting.boot().loader.fuse.coefficients(packed))


@pytest.fixture(scope="module")
def demo(pack, loras_dir, tmp_path_factory):
    """The host pointed at the demo models (next to the session's test LoRAs) and a fresh output folder."""
    import folder_paths

    models = REPO / "demo-output" / "models"
    demo_assets.ensure(models)
    saved = {name: folder_paths.folder_names_and_paths[name] for name in ("checkpoints", "loras")}
    output = folder_paths.get_output_directory()
    folder_paths.folder_names_and_paths["checkpoints"] = ([str(models / "checkpoints")],
                                                          folder_paths.supported_pt_extensions)
    folder_paths.filename_list_cache.pop("checkpoints", None)
    hosting.set_loras_dir(loras_dir, models / "loras")
    folder_paths.set_output_directory(str(tmp_path_factory.mktemp("output")))
    yield models
    folder_paths.folder_names_and_paths.update(saved)
    folder_paths.filename_list_cache.clear()
    folder_paths.set_output_directory(output)


@pytest.fixture(scope="module")
def workflow():
    return demo_workflow.load()


@pytest.fixture(scope="module")
def ids(workflow):
    return {kind: demo_workflow.node_ids(workflow, kind)[0]
            for kind in ("CheckpointLoaderSimple", "LoraDeckStack", "LoraDeckApply", "KSampler", "SaveImage")}


@pytest.fixture(scope="module")
def prompt(workflow, ids):
    return demo_workflow.with_changes(demo_workflow.to_prompt(workflow), {ids["KSampler"]: {"steps": STEPS}})


@pytest.fixture(scope="module")
def executor(demo):
    return hosting.Executor()


def run(executor, prompt: dict) -> dict:
    return executor.run(copy.deepcopy(prompt))  # the host unwraps {"__value__": …} in the prompt it is given


def rows_of(prompt, ids) -> list[dict]:
    return prompt[ids["LoraDeckStack"]]["inputs"]["rows"]["__value__"]


def test_converted_prompt_is_what_the_frontend_sends(prompt, ids):
    assert prompt[ids["KSampler"]]["inputs"] == {
        "seed": 20260101, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": [ids["LoraDeckApply"], 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0]}
    assert [(r["lora"], r["strength"]) for r in rows_of(prompt, ids)] == [
        (lora.name, s) for lora, s in zip(demo_assets.SAMPLE_LORAS, (0.8, 0.5, -0.35), strict=True)]
    assert prompt[ids["LoraDeckApply"]]["inputs"] == {
        "model": [ids["CheckpointLoaderSimple"], 0], "lora_stack": [ids["LoraDeckStack"], 0],
        "clip": [ids["CheckpointLoaderSimple"], 1]}
    assert "11" not in prompt  # the markdown note is frontend-only


def with_rows(prompt, ids, rows: list[dict]) -> dict:
    return demo_workflow.with_changes(prompt, {ids["LoraDeckStack"]: {"rows": {"__value__": rows}}})


def pixels(outputs, ids):
    import folder_paths
    import numpy as np
    from PIL import Image

    (image,) = outputs[ids["SaveImage"]]["images"]
    with Image.open(Path(folder_paths.get_output_directory()) / image["subfolder"] / image["filename"]) as png:
        return np.asarray(png.convert("RGB"), dtype=np.float32)


@pytest.fixture(scope="module")
def last_image():
    return {}


def test_stacked_run_patches_what_the_stack_says(demo, executor, prompt, ids, last_image):
    outputs = run(executor, prompt)
    last_image["pixels"] = pixels(outputs, ids)
    assert last_image["pixels"].shape == (64, 64, 3)
    model, clip, report = executor.executor.caches.outputs.get(ids["LoraDeckApply"]).outputs
    assert type(model[0].model.model_config).__name__ == "SD15"  # the host detected the demo checkpoint as SD1.5
    expected_model, expected_clip = Counter(), Counter()
    for row in rows_of(prompt, ids):
        unet_modules, text_modules = lora_modules(demo / "loras" / row["lora"])
        clip_strength = row["strength"] if row["clip_strength"] is None else row["clip_strength"]
        expected_model[row["strength"]] += unet_modules
        if text_modules:
            expected_clip[clip_strength] += text_modules
        assert f"{row['lora']}:" in report[0] and f"→ {unet_modules} weights, clip" in report[0]
    # every module of every file became one patch at its row's strength (192 + 258 + 276 UNet, 72 + 24 CLIP)
    assert strengths(model[0]) == expected_model and sum(expected_model.values()) == 726
    assert strengths(clip[0].patcher) == expected_clip and sum(expected_clip.values()) == 96
    assert "matched nothing" not in report[0] and outputs["10"]["text"] == [report[0]]


def test_strength_change_reruns_lora_nodes_without_reading_files(demo, executor, prompt, ids, pack, last_image):
    if executor.runs == 0:  # run alone: the workflow as shipped first
        run(executor, prompt)
    reads = pack.loader.files.stats
    opened, read = reads.files_opened, reads.bytes_read
    rows = [dict(row) for row in rows_of(prompt, ids)]
    rows[1]["strength"] = 0.25
    outputs = run(executor, with_rows(prompt, ids, rows))
    last_image["pixels"] = pixels(outputs, ids)
    ran = executor.executed_nodes()
    assert ids["LoraDeckStack"] in ran and ids["LoraDeckApply"] in ran and ids["KSampler"] in ran
    assert ids["CheckpointLoaderSimple"] not in ran  # the host's cache kept the checkpoint
    assert (reads.files_opened, reads.bytes_read) == (opened, read)
    model = executor.executor.caches.outputs.get(ids["LoraDeckApply"]).outputs[0][0]
    unet_modules, _ = lora_modules(demo / "loras" / rows[1]["lora"])
    assert strengths(model)[0.25] == unet_modules and 0.5 not in strengths(model)


def test_base_run_has_no_patches_and_another_picture(demo, executor, prompt, ids, last_image):
    if "pixels" not in last_image:
        last_image["pixels"] = pixels(run(executor, prompt), ids)
    outputs = run(executor, with_rows(prompt, ids, [{**row, "on": False} for row in rows_of(prompt, ids)]))
    model, clip, report = executor.executor.caches.outputs.get(ids["LoraDeckApply"]).outputs
    assert not model[0].patches and not clip[0].patcher.patches and report[0] == "no LoRAs applied"
    assert abs(pixels(outputs, ids) - last_image["pixels"]).mean() > 1.0  # of 255: the LoRAs change the picture


def test_converter_maps_positional_widgets_like_the_frontend(pack):
    """Control values sit after their seed anywhere in the list; optional widgets follow required ones."""
    workflow = {"nodes": [
        {"id": 1, "type": "KSamplerAdvanced", "mode": 0,
         "inputs": [{"name": "model", "type": "MODEL", "link": 1}, {"name": "positive", "type": "CONDITIONING"},
                    {"name": "negative", "type": "CONDITIONING"}, {"name": "latent_image", "type": "LATENT"}],
         "widgets_values": ["enable", 5, "increment", 20, 8.0, "euler", "normal", 0, 10000, "disable"]},
        {"id": 2, "type": "LoraDeckLoader", "mode": 0,
         "inputs": [{"name": "model", "type": "MODEL", "link": None}, {"name": "clip", "type": "CLIP", "link": None}],
         "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}],
         "widgets_values": ["a.safetensors", 0.7, 0.3, "OUT*=0.5"]},
        {"id": 3, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["text"]},
    ], "links": [[1, 2, 0, 1, 0, "MODEL"]]}
    prompt = demo_workflow.to_prompt(workflow)
    assert prompt["1"]["inputs"] == {
        "add_noise": "enable", "noise_seed": 5, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
        "scheduler": "normal", "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable",
        "model": ["2", 0]}
    assert prompt["2"]["inputs"] == {"lora_name": "a.safetensors", "strength_model": 0.7, "strength_clip": 0.3,
                                     "block_weights": "OUT*=0.5"}
    assert set(prompt) == {"1", "2"}
    workflow["nodes"][1]["mode"] = 4
    with pytest.raises(demo_workflow.WorkflowError, match=r"node 2 .* bypassed"):
        demo_workflow.to_prompt(workflow)
    workflow["nodes"][1].update(mode=0, type="SomeMissingPack")
    with pytest.raises(demo_workflow.WorkflowError, match="unknown node type 'SomeMissingPack'"):
        demo_workflow.to_prompt(workflow)
