"""The hostile corpus through the real host: API prompts validated and executed by the host's own executor.

What a user sees is what the host sends: a validation error (node outlined, `details` text, no traceback
at all) or an execution error (a dialog whose visible text is `exception_message`; the traceback sits
behind "Show Report" and in the server log, as for every failing node). Each case asserts the message
names the file and the problem, that nothing ran that should not, and that the same host then runs a
good prompt: the process and its executor keep working.
"""

from __future__ import annotations

import json
import re
import time

import hostile_corpus as corpus
import hosting
import probes
import pytest
import torch
from safetensors.torch import save


@pytest.fixture(scope="module")
def host(pack, loras_dir, sd15, sd15_clip):
    probes.MODELS.update(model=sd15, clip=sd15_clip)
    added = probes.register("Hostile")
    (loras_dir / "hostile").mkdir(exist_ok=True)
    (loras_dir / "hostile" / "good.safetensors").write_bytes(corpus.good_bytes())
    # The reference: the good prompt on a host that has seen no hostile input (an executor of its own).
    status, clean = Host(loras_dir / "hostile").run(GOOD_PROMPT)
    assert status == "ok", clean
    yield Host(loras_dir / "hostile", clean["3"])
    probes.unregister(added)


class Host:
    def __init__(self, folder, clean_outputs: dict | None = None):
        self.folder = folder
        self.executor = hosting.Executor()
        self.clean = clean_outputs

    def run(self, prompt: dict) -> tuple[str, object]:
        """("ok", outputs), ("invalid", {node id: [error, …]}) or ("failed", the host's execution_error message)."""
        # As it travels: JSON text (NaN, Infinity and -Infinity literals included), read as the server reads it.
        return self.executor.outcome(json.loads(json.dumps(prompt)))

    def still_works(self):
        status, outputs = self.run(GOOD_PROMPT)
        assert status == "ok", outputs
        assert outputs["3"]["patched"] == [1] and outputs["3"]["finite"] == [True]
        # Bit for bit what a host that never saw hostile input gives: nothing stale stayed in the model or caches.
        assert outputs["3"] == self.clean
        assert self.clean["patched_weights"] != self.clean["base_weights"]  # the LoRA did change the weights

    def refuses_at_run(self, prompt: dict, message: str, error_type: str = "") -> dict:
        status, error = self.run(prompt)
        assert status == "failed", (status, error)
        visible = error["exception_message"]
        assert visible.strip() == message or visible.startswith(message), visible
        assert "Traceback" not in visible and "File \"" not in visible
        assert error["exception_type"].endswith(error_type)
        self.still_works()
        return error

    def refuses_before_run(self, prompt: dict, node: str, text: str) -> list[dict]:
        status, errors = self.run(prompt)
        assert status == "invalid", (status, errors)
        details = " | ".join(e.get("details", "") for e in errors[node])
        assert text in details, details
        for error in errors[node]:  # validation errors carry no traceback at all
            assert "traceback" not in error.get("extra_info", {})
        self.still_works()
        return errors[node]


def loader_prompt(lora_name, strength=1.0, strength_clip=1.0, blocks="") -> dict:
    return {
        "1": {"class_type": "HostileMiniModel", "inputs": {}},
        "2": {"class_type": "LoraDeckLoader", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "lora_name": lora_name, "strength_model": strength,
            "strength_clip": strength_clip, "block_weights": blocks}},
        "3": {"class_type": "HostileProbe", "inputs": {"model": ["2", 0], "clip": ["2", 1], "report": ["2", 2]}},
    }


GOOD_PROMPT = loader_prompt("hostile/good.safetensors", strength=0.5)


def stack_prompt(rows, extra_stack_node: dict | None = None) -> dict:
    prompt = {
        "1": {"class_type": "HostileMiniModel", "inputs": {}},
        "4": {"class_type": "LoraDeckStack", "inputs": {"rows": {"__value__": rows}}},
        "2": {"class_type": "LoraDeckApply", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_stack": ["4", 0]}},
        "3": {"class_type": "HostileProbe", "inputs": {"model": ["2", 0], "clip": ["2", 1], "report": ["2", 2]}},
    }
    return prompt


# A file's header is checked when the prompt is validated: the workflow stops before it runs, the message on
# the node. What only the tensor data shows (NaN, layout) is found when the node runs.
BEFORE_RUN = [*corpus.HEADER_CASES, corpus.CONTENT_CASES[0]]
AT_RUN = corpus.CONTENT_CASES[1:]


@pytest.mark.parametrize("case", BEFORE_RUN, ids=lambda c: c.name)
def test_broken_file_stops_the_workflow_before_it_runs(host, case):
    path = case.write(host.folder)
    errors = host.refuses_before_run(loader_prompt(f"hostile/{path.name}"), "2", f"{path.name}: ")
    assert re.search(re.escape(path.name) + ": " + case.problem, errors[0]["details"]), errors[0]["details"]
    host.refuses_before_run(stack_prompt([{"lora": f"hostile/{path.name}"}]), "4", f"{path.name}: ")


@pytest.mark.parametrize("case", AT_RUN, ids=lambda c: c.name)
def test_bad_contents_fail_the_node_with_a_clear_message(host, case, monkeypatch):
    monkeypatch.delenv("LORADECK_ALLOW_NONFINITE", raising=False)
    path = case.write(host.folder)
    # At run time the message names the LoRA as the workflow does (its path inside the loras folders).
    error = host.refuses_at_run(loader_prompt(f"hostile/{path.name}"), f"hostile/{path.name}: ", "LoraApplyError")
    assert re.match(re.escape(f"hostile/{path.name}") + ": " + case.problem, error["exception_message"]), error
    rows = [{"lora": "hostile/good.safetensors", "strength": 0.3}, {"lora": f"hostile/{path.name}", "strength": 1}]
    host.refuses_at_run(stack_prompt(rows), f"hostile/{path.name}: ", "LoraApplyError")


def test_folder_named_like_a_lora_is_refused_before_running(host):
    corpus.DIRECTORY_CASE.write(host.folder)
    host.refuses_before_run(loader_prompt("hostile/folder.safetensors"), "2", "is a folder in your loras folders")


def test_pickle_payload_never_runs_in_the_host(host, loras_dir):
    canary = corpus.Canary(loras_dir)
    for path in corpus.evil_pickles(host.folder, canary):
        error = host.refuses_at_run(loader_prompt(f"hostile/{path.name}"),
                                    f"hostile/{path.name}: is a pickle that would call ", "LoraApplyError")
        assert "; it was refused unopened to keep your machine safe" in error["exception_message"]
        assert not canary.fired()


class TestNonFinite:
    def test_refused_by_default(self, host, monkeypatch):
        monkeypatch.delenv("LORADECK_ALLOW_NONFINITE", raising=False)
        path = corpus.CONTENT_CASES[1].write(host.folder)
        host.refuses_at_run(loader_prompt(f"hostile/{path.name}"),
                            f"hostile/{path.name}: has NaN or infinite values in 2 tensor(s)", "LoraApplyError")

    def test_opt_in_applies_it_and_opting_out_refuses_it_again(self, host, monkeypatch, pack):
        tensors = corpus.good_tensors(seed=5)
        tensors[f"{corpus.SD15_MODULE}.lora_up.weight"][0, 0] = float("inf")
        (host.folder / "inf_optin.safetensors").write_bytes(save(tensors))
        monkeypatch.setenv("LORADECK_ALLOW_NONFINITE", "1")
        status, outputs = host.run(loader_prompt("hostile/inf_optin.safetensors"))
        assert status == "ok" and outputs["3"]["finite"] == [False]  # the user asked for it
        reads = pack.loader.files.stats.files_opened
        monkeypatch.delenv("LORADECK_ALLOW_NONFINITE")
        host.refuses_at_run(loader_prompt("hostile/inf_optin.safetensors", strength=0.7),
                            "hostile/inf_optin.safetensors: has NaN or infinite values in 1 tensor(s)")
        assert pack.loader.files.stats.files_opened <= reads + 1  # the good file of still_works, at most


def test_shapes_that_do_not_fit_the_model(host):
    # Same module names as the miniature SD1 model, widths of a real SD1 LoRA (context 768, not 64).
    tensors = corpus.good_tensors(in_features=768, out_features=320)
    (host.folder / "full_size_sd1.safetensors").write_bytes(save(tensors))
    host.refuses_at_run(loader_prompt("hostile/full_size_sd1.safetensors"),
                        "hostile/full_size_sd1.safetensors: its shapes do not fit this model; "
                        "is it made for another model? "
                        f"(e.g. {corpus.SD15_MODULE}: its change does not fit the model's weight [32, 64] "
                        "(shape '[32, 64]' is invalid for input of size 245760))",
                        "LoraApplyError")


def test_partly_fitting_lora_applies_what_fits_and_says_so(host):
    tensors = corpus.good_tensors()
    other = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_v"
    tensors.update(corpus.good_tensors(module=other, in_features=768, out_features=320))
    (host.folder / "half_fits.safetensors").write_bytes(save(tensors))
    status, outputs = host.run(loader_prompt("hostile/half_fits.safetensors"))
    assert status == "ok", outputs
    assert outputs["3"]["patched"] == [1] and outputs["3"]["finite"] == [True]
    assert "1 modules do not fit this model's shapes (skipped)" in outputs["3"]["report"][0]


def test_lora_for_another_architecture(host):
    sdxl = {}
    for module, out_features, in_features in [
            ("lora_unet_input_blocks_7_1_transformer_blocks_9_attn2_to_k", 640, 2048),
            ("lora_te2_text_model_encoder_layers_0_mlp_fc1", 5120, 1280)]:
        sdxl.update(corpus.good_tensors(module=module, out_features=out_features, in_features=in_features, rank=2))
    (host.folder / "for_sdxl.safetensors").write_bytes(save(sdxl))
    host.refuses_at_run(loader_prompt("hostile/for_sdxl.safetensors"),
                        "hostile/for_sdxl.safetensors: this is a SDXL LoRA but the model is SD15", "LoraApplyError")


def test_duplicate_module_in_two_styles(host):
    path = corpus.CONTENT_CASES[2].write(host.folder)
    host.refuses_at_run(loader_prompt(f"hostile/{path.name}"),
                        f"hostile/{path.name}: module '{corpus.SD15_MODULE}' is given twice", "LoraApplyError")


def test_two_hundred_loras_in_one_stack(host):
    folder = host.folder / "many"
    folder.mkdir(exist_ok=True)
    for i in range(200):
        (folder / f"l{i:03}.safetensors").write_bytes(corpus.good_bytes(seed=100 + i, rank=1))
    rows = [{"lora": f"hostile/many/l{i:03}.safetensors", "strength": 0.01} for i in range(200)]
    started = time.perf_counter()
    status, outputs = host.run(stack_prompt(rows))
    elapsed = time.perf_counter() - started
    assert status == "ok", outputs
    assert len(outputs["3"]["report"][0].splitlines()) == 200
    assert outputs["3"]["finite"] == [True]
    assert elapsed < 60, f"200 LoRAs took {elapsed:.1f}s"


class TestStrengthsTypedIntoJSON:
    """Python's json (and so the host's /prompt route) reads NaN, Infinity and -Infinity literals."""

    @pytest.mark.parametrize(("value", "text"), [(1e30, "Value 1e+30 bigger than max of 100.0"),
                                                 (float("-inf"), "Value -inf smaller than min of -100.0")])
    def test_loader_widget_range_is_the_hosts(self, host, value, text):
        errors = host.refuses_before_run(loader_prompt("hostile/good.safetensors", strength=value), "2", "")
        assert any(text in e["message"] for e in errors), errors

    def test_loader_nan_strength(self, host):
        # The host's range check lets NaN through (every comparison with NaN is false); we refuse it.
        host.refuses_at_run(loader_prompt("hostile/good.safetensors", strength_clip=float("nan")),
                            "hostile/good.safetensors: strength_clip is nan; strengths must be finite numbers",
                            "StackError")

    @pytest.mark.parametrize(("value", "text"), [
        (1e30, "row 1: strength is 1e+30; strengths must lie between -100 and 100"),
        (float("nan"), "row 1: strength is nan; strengths must be finite numbers"),
        (float("-inf"), "row 1: strength is -inf; strengths must be finite numbers")])
    def test_stack_rows(self, host, value, text):
        host.refuses_before_run(stack_prompt([{"lora": "hostile/good.safetensors", "strength": value}]), "4", text)


@pytest.mark.parametrize(("name", "text"), [
    ("../secret.safetensors", "steps out of the loras folders"),
    ("hostile/../../secret.safetensors", "steps out of the loras folders"),
    ("..\\secret.safetensors", "steps out of the loras folders"),
    ("/etc/passwd", "is an absolute path"),
    ("C:\\Windows\\win.ini", "is an absolute path"),
    ("\\\\server\\share\\a.safetensors", "is an absolute path"),
    ("hostile/good.safetensors\x00.png", "contains a NUL byte"),
])
def test_names_from_workflows_stay_inside(host, name, text):
    host.refuses_before_run(loader_prompt(name), "2", text)
    host.refuses_before_run(stack_prompt([{"lora": name, "strength": 1.0}]), "4", text)


def test_windows_separators_and_user_symlinks_keep_working(host, tmp_path):
    outside = tmp_path / "my_other_drive"
    outside.mkdir()
    (outside / "linked.safetensors").write_bytes(corpus.good_bytes(seed=9))
    link = host.folder / "linked.safetensors"
    if not link.exists():
        link.symlink_to(outside / "linked.safetensors")
    for name in ("hostile\\good.safetensors", "hostile/linked.safetensors"):
        status, outputs = host.run(loader_prompt(name, strength=0.9))
        assert status == "ok", outputs
        assert outputs["3"]["patched"] == [1]


def test_host_keeps_no_stray_state(host):
    # After the whole corpus: the next prompt really runs (not from the host's output cache) and gives what a
    # clean host gives, bit for bit; nothing was written into the loras folder but ours.
    status, _ = host.run(loader_prompt("hostile/good.safetensors", strength=0.25))  # so the next one runs afresh
    assert status == "ok"
    host.still_works()
    assert {"2", "3"} <= set(host.executor.executed_nodes())
    assert not any(p.name.startswith(".") and p.name.endswith(".tmp") for p in host.folder.rglob("*"))


@pytest.mark.parametrize("blocks", [
    "IN04=;;==@@::", "1," * 50_000 + "1", "(" * 50_000 + ")" * 50_000, "x" * 2_000_000, "IN04=nan",
    "OUT*=1e309", "@" + ":" * 5000 + "1",
])
def test_hostile_block_specs(host, blocks):
    error = host.refuses_at_run(loader_prompt("hostile/good.safetensors", blocks=blocks),
                                "hostile/good.safetensors: block weights: ", "LoraApplyError")
    assert len(error["exception_message"]) < 1000
    rows = [{"lora": "hostile/good.safetensors", "strength": 0.5, "blocks": blocks}]
    host.refuses_at_run(stack_prompt(rows), "hostile/good.safetensors: block weights: ", "LoraApplyError")


def test_shape_check_covers_every_adapter_type(host):
    # A LoHa (LyCORIS) with a real SD1 LoRA's widths on the miniature model: checked by its own math, on meta.
    m = corpus.SD15_MODULE
    loha = {f"{m}.hada_w1_a": torch.randn(320, 2), f"{m}.hada_w1_b": torch.randn(2, 768),
            f"{m}.hada_w2_a": torch.randn(320, 2), f"{m}.hada_w2_b": torch.randn(2, 768),
            f"{m}.alpha": torch.tensor(2.0)}
    (host.folder / "loha_full_size.safetensors").write_bytes(save(loha))
    error = host.refuses_at_run(loader_prompt("hostile/loha_full_size.safetensors"),
                                "hostile/loha_full_size.safetensors: its shapes do not fit this model",
                                "LoraApplyError")
    assert "the model's weight [32, 64]" in error["exception_message"]
