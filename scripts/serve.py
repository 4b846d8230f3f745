"""`make serve`: the real ComfyUI server and UI on 127.0.0.1:8188 with LoRA Deck and the demo models.

The host runs with `--base-directory demo-output`: its models folder is the demo's (the checkpoint and the
three LoRAs that `make demo` builds, built here too if missing) and its output, input and user folders stay
inside demo-output/. The pack is loaded from a link to this repository in a temporary custom_nodes folder
(named in an extra-model-paths file; a link inside the repository would loop). A ComfyUI of your own
(COMFYUI_PATH) is used as it is and none of its own folders are touched.

    scripts/serve.py [--port 8188] [--check] [-- extra ComfyUI arguments]

`--check` starts the server, waits until /object_info/LoraDeckStack answers, checks that the demo checkpoint
and LoRAs are listed, and stops.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

import demo_assets  # noqa: E402
import hosting  # noqa: E402

BASE = demo_assets.REPO / "demo-output"
PACK_LINK = "comfyui-loradeck"


def prepare(base: Path, scratch: Path) -> Path:
    """Demo models in base/models, the pack linked into scratch/custom_nodes; the extra-model-paths file."""
    demo_assets.ensure(base / "models")
    for folder in ("user", "custom_nodes"):  # the host lists its own custom_nodes folder: it must exist (empty)
        (base / folder).mkdir(parents=True, exist_ok=True)
    custom_nodes = scratch / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / PACK_LINK).symlink_to(demo_assets.REPO, target_is_directory=True)
    config = scratch / "extra_model_paths.yaml"
    config.write_text(f"loradeck:\n  custom_nodes: {json.dumps(str(custom_nodes))}\n", encoding="utf-8")
    return config


def command(base: Path, config: Path, port: int, extra: list[str]) -> list[str]:
    return [sys.executable, str(hosting.COMFYUI_PATH / "main.py"), "--cpu", "--listen", "127.0.0.1",
            "--port", str(port), "--base-directory", str(base), "--extra-model-paths-config", str(config),
            "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}", *extra]


def wait_for(url: str, server: subprocess.Popen, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with code {server.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise TimeoutError(f"no answer from {url} within {timeout:.0f} s")


def check(root: str, server: subprocess.Popen, timeout: float) -> int:
    """The pack's nodes are registered, the demo checkpoint and LoRAs are listed, the example is a template."""
    stack = json.loads(wait_for(f"{root}/object_info/LoraDeckStack", server, timeout))
    checkpoints = json.loads(wait_for(f"{root}/object_info/CheckpointLoaderSimple", server, 30))
    loader = json.loads(wait_for(f"{root}/object_info/LoraDeckLoader", server, 30))
    found = {
        "LoraDeckStack": "LoraDeckStack" in stack,
        demo_assets.CHECKPOINT: demo_assets.CHECKPOINT in _choices(checkpoints, "CheckpointLoaderSimple", "ckpt_name"),
        **{lora.name: lora.name in _choices(loader, "LoraDeckLoader", "lora_name")
           for lora in demo_assets.SAMPLE_LORAS},
    }
    templates = json.loads(wait_for(f"{root}/workflow_templates", server, 30))
    found["template loradeck_stack"] = "loradeck_stack" in templates.get(PACK_LINK, [])
    shipped = json.loads(wait_for(f"{root}/api/workflow_templates/{PACK_LINK}/loradeck_stack.json", server, 30))
    found["template served"] = {n["type"] for n in shipped["nodes"]} >= {"LoraDeckStack", "LoraDeckApply"}
    print(json.dumps({"object_info/LoraDeckStack": stack.get("LoraDeckStack", {}).get("input"), "found": found},
                     indent=2))
    return 0 if all(found.values()) else 1


def _choices(info: dict, node: str, name: str) -> list[str]:
    """A combo's options from /object_info: V1 lists them first, V3 under "options"."""
    kind, options = info[node]["input"]["required"][name][:2]
    return kind if isinstance(kind, list) else options.get("options", [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base", type=Path, default=BASE, help="the host's base directory (default demo-output)")
    parser.add_argument("--check", action="store_true", help="start, query /object_info, stop")
    parser.add_argument("--timeout", type=float, default=180, help="seconds --check waits for the server")
    parser.add_argument("extra", nargs="*", help="further ComfyUI arguments (after --)")
    args = parser.parse_args(argv)
    if not (hosting.COMFYUI_PATH / "main.py").is_file():
        print(f"No ComfyUI at {hosting.COMFYUI_PATH}: run `make setup` or set COMFYUI_PATH", file=sys.stderr)
        return 2
    base = args.base.resolve()
    with tempfile.TemporaryDirectory(prefix="loradeck-serve-") as scratch:
        config = prepare(base, Path(scratch))
        print(f"ComfyUI {hosting.COMFYUI_PATH} with LoRA Deck; models, outputs and settings in {base}", flush=True)
        print(f"open http://127.0.0.1:{args.port} (Templates > comfyui-loradeck > loradeck_stack)", flush=True)
        return serve(command(base, config, args.port, args.extra), args)


def serve(argv: list[str], args: argparse.Namespace) -> int:
    server = subprocess.Popen(argv, cwd=hosting.COMFYUI_PATH)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server too when we are stopped
    try:
        if args.check:
            return check(f"http://127.0.0.1:{args.port}", server, args.timeout)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    sys.exit(main())
