"""A LoRA replaced in place by another of the same size and mtime (cp -p, rsync -t, unzip, sync clients)
is applied fresh on the next run, on the real host: never the old version, never a mix of both.

Reference: the host's own LoRA loading (comfy.sd.load_lora_for_models) of the new file, ≤1e-5 relative per
weight, fp32; and, through the host's executor, the same patched-weight digests as a host that only ever
saw the new file.
"""

from __future__ import annotations

import os
import shutil

import hosting
import probes
import producers
import pytest
from compare import changed, worst_relative_error
from test_nodes import host_chain, node

TOLERANCE = 1e-5
HOW = ["in place", "renamed over"]


@pytest.fixture(scope="module")
def versions_dir(loras_dir):
    """Two versions of one LoRA, same structure and so the same size: what a retrained file looks like."""
    folder = loras_dir / "versions"
    folder.mkdir(exist_ok=True)
    made = {}
    for version, seed in (("v1", 40), ("v2", 41)):
        unet = producers.attach_lora(producers.diffusers_sd15_unet(), producers.UNET_TARGETS, rank=4, alpha=8,
                                     seed=seed)
        text = producers.attach_lora(producers.transformers_clip_text(), producers.TEXT_TARGETS, rank=4, alpha=8,
                                     seed=seed + 10)
        made[version] = producers.save_kohya_sd15(str(folder / f"{version}.safetensors"), unet, text)
    assert os.path.getsize(made["v1"]) == os.path.getsize(made["v2"])
    return folder, made


def put(source: str, target, how: str = "in place") -> None:
    """Copy `source` over `target`, keeping target's mtime (its size is the same), as cp -p / rsync -t do."""
    if not target.exists():
        shutil.copyfile(source, target)
        return
    before = os.stat(target)
    if how == "in place":
        with open(source, "rb") as src, open(target, "r+b") as dst:
            dst.write(src.read())
    else:
        shutil.copyfile(source, str(target) + ".part")
        os.replace(str(target) + ".part", target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def loader(model, clip, name: str):
    ours_model, ours_clip, _ = node("LoraDeckLoader").execute(
        model=model, lora_name=name, strength_model=0.8, clip=clip, strength_clip=0.7).args[:3]
    return ours_model, ours_clip


@pytest.mark.parametrize("how", HOW)
def test_model_only_then_with_clip_after_a_same_size_same_mtime_replacement(versions_dir, sd15, sd15_clip, how):
    folder, made = versions_dir
    target = folder / f"swap-{how.replace(' ', '-')}.safetensors"
    name = f"versions/{target.name}"
    put(made["v1"], target)
    loader(sd15, None, name)  # the first version's UNet tensors are now cached; its text encoder's are not
    put(made["v2"], target, how)

    host_model, host_clip = host_chain(sd15, sd15_clip, [(made["v2"], 0.8, 0.7)])
    old_model, old_clip = host_chain(sd15, sd15_clip, [(made["v1"], 0.8, 0.7)])
    ours_model, _ = loader(sd15, None, name)  # model only
    assert worst_relative_error(changed(ours_model), changed(host_model)) <= TOLERANCE
    ours_model, ours_clip = loader(sd15, sd15_clip, name)  # then with CLIP: no text encoder of the old file
    assert worst_relative_error(changed(ours_model), changed(host_model)) <= TOLERANCE
    assert worst_relative_error(changed(ours_clip.patcher), changed(host_clip.patcher)) <= TOLERANCE
    # The two versions differ far beyond the tolerance, so an old or mixed result cannot pass.
    assert worst_relative_error(changed(old_model), changed(host_model)) > 0.1
    assert worst_relative_error(changed(old_clip.patcher), changed(host_clip.patcher)) > 0.1


@pytest.fixture
def probe_nodes(sd15, sd15_clip):
    probes.MODELS.update(model=sd15, clip=sd15_clip)
    added = probes.register("Versions")
    yield
    probes.unregister(added)


def prompt(name: str, kind: str) -> dict:
    if kind == "loader":
        lora = {"class_type": "LoraDeckLoader", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "lora_name": name, "strength_model": 0.8, "strength_clip": 0.7}}
        return {"1": {"class_type": "VersionsMiniModel", "inputs": {}}, "2": lora,
                "3": {"class_type": "VersionsProbe", "inputs": {"model": ["2", 0], "clip": ["2", 1]}}}
    return probes.stack_prompt("Versions", [{"lora": name, "strength": 0.8, "clip_strength": 0.7, "on": True}])


@pytest.mark.parametrize("kind", ["loader", "stack"])
def test_the_host_runs_the_node_again_when_its_file_was_replaced(versions_dir, probe_nodes, kind):
    """The host caches node outputs by their inputs; the nodes' input fingerprints carry the file version."""
    folder, made = versions_dir
    target = folder / f"queued-{kind}.safetensors"
    name = f"versions/{target.name}"
    put(made["v1"], target)
    host = hosting.Executor()
    first = host.run(prompt(name, kind))["3"]
    again = host.run(prompt(name, kind))["3"]
    assert again == first and "2" not in host.executed_nodes()  # nothing changed: the host's cache answers
    put(made["v2"], target)
    second = host.run(prompt(name, kind))["3"]
    assert "2" in host.executed_nodes()

    fresh = folder / f"fresh-{kind}.safetensors"
    put(made["v2"], fresh)
    reference = hosting.Executor().run(prompt(f"versions/{fresh.name}", kind))["3"]
    assert second["patched_weights"] == reference["patched_weights"] != first["patched_weights"]
    assert second["conditioning"] == reference["conditioning"] != first["conditioning"]
