"""`make demo`: the shipped example workflow, run headless through the real host, without and with the stack.

Builds the demo checkpoint and LoRAs once (scripts/demo_assets.py, into demo-output/models), boots the
host in-process with this pack loaded, converts example_workflows/loradeck_stack.json to an API prompt
and runs it twice through the host's own executor: base (every stack row off) and stacked (as shipped).
Writes base.png, stacked.png, the prompt, summary.md and summary.json to demo-output/.
The demo model is random: the pipeline is real, the pictures are noise.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

STARTED = time.perf_counter()  # before the heavy imports below: the summary's total is the whole run

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

import demo_assets  # noqa: E402  (also puts tests/ on the path for the host harness)
import demo_workflow  # noqa: E402
import hosting  # noqa: E402

OUTPUT = demo_assets.REPO / "demo-output"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for models, images and summary")
    args = parser.parse_args(argv)
    times: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        times[name] = round(now - since, 2)
        print(f"{name}: {times[name]} s", flush=True)
        return now

    output = args.output.resolve()
    models = output / "models"
    now = time.perf_counter()
    pack = hosting.boot(models / "loras")
    now = lap("host boot", now)
    manifest = demo_assets.ensure(models)
    now = lap("assets (built once, then reused)", now)
    result = run_demo(pack, models, output / ".render")
    times.update(result.pop("times"))
    times["total"] = round(time.perf_counter() - STARTED, 2)
    for kind in ("base", "stacked"):
        os.replace(result["images"][kind], output / f"{kind}.png")
        result["images"][kind] = f"{kind}.png"
    shutil.rmtree(output / ".render", ignore_errors=True)
    summary = {"model": manifest["checkpoint"], "loras": manifest["loras"], **result, "seconds": times,
               "asset_build_seconds": manifest["build_seconds"]}
    _write(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    _write(output / "summary.md", summary_markdown(summary))
    print(summary_markdown(summary))
    print(f"wrote {output / 'base.png'}, {output / 'stacked.png'} and {output / 'summary.md'}")
    return 0


def run_demo(pack, models: Path, render: Path) -> dict:
    """Run the example workflow base and stacked; images, reports, patch counts and times."""
    import folder_paths

    folder_paths.folder_names_and_paths["checkpoints"] = ([str(models / "checkpoints")],
                                                          folder_paths.supported_pt_extensions)
    folder_paths.filename_list_cache.pop("checkpoints", None)
    hosting.set_loras_dir(models / "loras")
    render.mkdir(parents=True, exist_ok=True)
    folder_paths.set_output_directory(str(render))

    workflow = demo_workflow.load()
    stacked = demo_workflow.to_prompt(workflow)
    (stack_id,) = demo_workflow.node_ids(workflow, "LoraDeckStack")
    (apply_id,) = demo_workflow.node_ids(workflow, "LoraDeckApply")
    (save_id,) = demo_workflow.node_ids(workflow, "SaveImage")
    (checkpoint_id,) = demo_workflow.node_ids(workflow, "CheckpointLoaderSimple")
    rows = stacked[stack_id]["inputs"]["rows"]["__value__"]
    base = demo_workflow.with_changes(stacked, {stack_id: {"rows": {"__value__": [{**r, "on": False} for r in rows]}},
                                                save_id: {"filename_prefix": "base"}})
    stacked = demo_workflow.with_changes(stacked, {save_id: {"filename_prefix": "stacked"}})
    _write(render.parent / "prompt.json", json.dumps(stacked, indent=2) + "\n")

    executor = hosting.Executor()
    result: dict = {"images": {}, "reports": {}, "patches": {}, "times": {}}
    for kind, prompt in (("base", base), ("stacked", stacked)):
        started = time.perf_counter()
        outputs = executor.run(copy.deepcopy(prompt))  # the host unwraps {"__value__": …} in what it is given
        result["times"][f"{kind} run"] = round(time.perf_counter() - started, 2)
        print(f"{kind} run: {result['times'][f'{kind} run']} s", flush=True)
        (image,) = outputs[save_id]["images"]
        result["images"][kind] = str(render / image["subfolder"] / image["filename"])
        model, clip, report = executor.executor.caches.outputs.get(apply_id).outputs
        result["reports"][kind] = report[0]
        result["patches"][kind] = {"model": patch_counts(model[0]), "clip": patch_counts(clip[0].patcher)}
    result["per_lora"] = per_lora_counts(pack, executor, checkpoint_id, rows)
    result["pixel_change"] = pixel_change(result["images"]["base"], result["images"]["stacked"])
    return result


def patch_counts(patcher) -> dict:
    """How many weights carry patches, how many patches there are, and how many at each strength."""
    strengths = Counter(round(patch[0], 6) for patches in patcher.patches.values() for patch in patches)
    return {"weights": sum(1 for p in patcher.patches.values() if p), "patches": sum(strengths.values()),
            "by_strength": {str(k): v for k, v in sorted(strengths.items())}}


def per_lora_counts(pack, executor, checkpoint_id: str, rows: list[dict]) -> list[dict]:
    """Each row's weights as LoRA Deck reports them, applied again to the checkpoint the executor loaded."""
    model, clip, _ = executor.executor.caches.outputs.get(checkpoint_id).outputs
    entries = pack.loader.stack.build_stack(None, pack.loader.stack.rows_from_value(rows))  # as LoraDeckStack does
    _, _, reports = pack.nodes.patching.apply_stack(model[0], clip[0], entries)
    return [{"lora": r.name, "family": r.family, "kinds": list(r.kinds), "base": r.base,
             "strength_model": r.strength_model, "strength_clip": r.strength_clip,
             "model_weights": r.model_keys, "clip_weights": r.clip_keys} for r in reports]


def pixel_change(base_png: str, stacked_png: str) -> dict:
    import numpy as np
    from PIL import Image

    base = np.asarray(Image.open(base_png).convert("RGB"), dtype=np.float32)
    stacked = np.asarray(Image.open(stacked_png).convert("RGB"), dtype=np.float32)
    return {"size": list(base.shape[1::-1]), "mean_abs_difference_0_255": round(float(abs(base - stacked).mean()), 2)}


def summary_markdown(summary: dict) -> str:
    lines = ["# LoRA Deck demo", "",
             f"Checkpoint `{summary['model']}`: a small SD1 model with **random weights** (the host detects it as "
             "SD15). The pipeline is real; the pictures are noise.", "",
             "| LoRA | format | producer | rank / alpha | strength model / clip | weights patched model / clip |",
             "|---|---|---|---|---|---|"]
    made = {lora["name"]: lora for lora in summary["loras"]}
    for row in summary["per_lora"]:
        lora = made.get(row["lora"], {})
        lines.append(f"| `{row['lora']}` | {lora.get('format', row['family'])} | {lora.get('producer', '')} | "
                     f"{lora.get('rank', '?')} / {lora.get('alpha', '?')} | "
                     f"{row['strength_model']:g} / {row['strength_clip']:g} | "
                     f"{row['model_weights']} / {row['clip_weights']} |")
    patches = summary["patches"]["stacked"]
    lines += ["", f"Stacked model: {patches['model']['weights']} UNet weights carry {patches['model']['patches']} "
              f"patches; text encoder: {patches['clip']['weights']} weights carry {patches['clip']['patches']} "
              f"patches. Base run: {summary['patches']['base']['model']['patches']} patches.",
              f"Images: `base.png` and `stacked.png`, {summary['pixel_change']['size'][0]}×"
              f"{summary['pixel_change']['size'][1]} px; mean absolute pixel difference "
              f"{summary['pixel_change']['mean_abs_difference_0_255']} of 255.", "",
              "LoRA Deck's report (the Apply node's third output):", "", "```", summary["reports"]["stacked"], "```",
              "", "| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds} |" for name, seconds in summary["seconds"].items()]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


if __name__ == "__main__":
    sys.exit(main())
