"""The real ComfyUI server with this pack, and Debian's Chromium driven by Playwright.

The server runs from COMFYUI_PATH with `--base-directory` pointing at a temporary folder whose
custom_nodes holds links to this pack and to the test-only pack (a miniature model node), and whose
loras folder holds small real LoRA files (fixtures.py). Every test that uses the server runs once per
frontend: the host's pinned one and each version in frontends.txt (`make frontends` installs them into
<venv>/frontends/<version>; the server serves one with `--front-end-root`). Test ids carry the version;
screenshots and the server's log go to test-artifacts/browser/<version>/.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright import sync_api  # a dev extra; like Chromium, never skipped when missing: `make test` installs both

sys.path.insert(0, str(Path(__file__).parent))

import fixtures
import spec_table

REPO = Path(__file__).resolve().parents[2]
COMFYUI_PATH = Path(os.environ.get("COMFYUI_PATH") or REPO / ".host" / "ComfyUI").resolve()
CHROMIUM = os.environ.get("LORADECK_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Settings a returning user has: no first-run template browser, no release pop-ups.
USER_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Validation.Workflows": True,
                 "Comfy.Release.Version": "99.0.0", "Comfy.Release.Status": "skipped",
                 "Comfy.Workflow.ShowMissingModelsWarning": False, "Comfy.Minimap.Visible": False}


FRONTENDS_TXT = Path(__file__).with_name("frontends.txt")
FRONTENDS_DIR = Path(sys.prefix) / "frontends"  # `make frontends` installs into the venv that runs the tests


def _frontends() -> list[str]:
    """The host's pinned frontend version, then each further version listed in frontends.txt."""
    pinned = importlib.metadata.version("comfyui-frontend-package")
    listed = [line.strip() for line in FRONTENDS_TXT.read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    return [pinned] + [v for v in listed if v != pinned]


FRONTENDS = _frontends()
PINNED = FRONTENDS[0]


def pytest_generate_tests(metafunc):
    if "server" in metafunc.fixturenames:
        metafunc.parametrize("frontend", FRONTENDS, indirect=True, scope="session", ids=FRONTENDS)


@pytest.fixture(scope="session")
def frontend(request) -> str:
    return request.param


def _front_end_root(version: str) -> list[str]:
    """The server's arguments for `version`: none for the pinned one (the host serves its own)."""
    if version == PINNED:
        return []
    static = FRONTENDS_DIR / version / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        pytest.fail(f"frontend {version} is not installed at {static}: run `make frontends`")
    return ["--front-end-root", str(static)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, base: Path, loras: Path, outside: Path, files: dict[str, Path], frontend: str):
        self.url, self.base, self.loras, self.outside, self.files = url, base, loras, outside, files
        self.frontend = frontend
        self.artifacts = ARTIFACTS / frontend

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body or b"{}")
            except json.JSONDecodeError:
                return e.code, {"raw": body.decode(errors="replace")}

    def post(self, path: str, payload: dict) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="session")
def server(tmp_path_factory, frontend):
    if not (COMFYUI_PATH / "main.py").is_file():
        pytest.fail(f"no ComfyUI at {COMFYUI_PATH}: run `make setup` or set COMFYUI_PATH")
    root = tmp_path_factory.mktemp("comfy")
    base = root / "base"
    loras = base / "models" / "loras"
    outside = root / "outside"
    files = fixtures.make_library(loras, outside)
    custom = base / "custom_nodes"
    custom.mkdir(parents=True)
    os.symlink(REPO, custom / "comfyui-loradeck")
    os.symlink(Path(__file__).parent / "testing_pack", custom / "loradeck_testing")
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(USER_SETTINGS))
    user_presets = base / "user" / "loradeck" / "block_presets.txt"
    user_presets.parent.mkdir(parents=True)
    # SOFTFACE for the editor's preset picker; the grammar table's presets, which its specs name.
    user_presets.write_text("# my presets\nSOFTFACE:IN04=0.5, OUT05=0.25\n"
                            + "".join(f"{name}:{text}\n" for name, text in spec_table.USER_PRESETS.items()))
    artifacts = ARTIFACTS / frontend
    artifacts.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = open(artifacts / "server.log", "w")  # noqa: SIM115 (the server writes to it until teardown)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--base-directory", str(base), "--disable-auto-launch", *_front_end_root(frontend)],
        cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT, env=env)
    srv = Server(f"http://127.0.0.1:{port}", base, loras, outside, files, frontend)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}; see {artifacts / 'server.log'}")
            try:
                status, body = srv.get("/object_info/LoraDeckStack")
                if status == 200 and body:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ComfyUI did not serve LoraDeckStack in 180 s; see {artifacts / 'server.log'}")
            time.sleep(0.5)
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    # Module scope: Playwright's sync API keeps an event loop running while it is open, and tests that
    # follow in the same process (the in-process host's) call asyncio.run().
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium (or set LORADECK_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def _page_error(errors: list[str], error) -> None:
    """Record an uncaught error in the page, unless it is thrown inside the frontend's PrimeVue bundle (code
    of ours would be the top frame): frontend 1.35.9's Nodes 2.0 combo throws one whenever its list closes."""
    frames = [line.strip() for line in (error.stack or "").splitlines()[1:]]
    if frames and "/assets/vendor-primevue-" in frames[0]:
        print(f"(the frontend's own error, not counted: {error} {frames[0]})")
        return
    errors.append(f"{error} {frames[:2]}")


@pytest.fixture
def page(server, browser, request):
    """A fresh page on the ComfyUI frontend with an empty graph; a screenshot is kept after the test."""
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    context.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: _page_error(errors, e))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "loradeck" in m.text.lower() else None)
    pg.goto(server.url + "/")
    # The frontend loads its startup workflow a moment after the graph exists (and it has a change tracker
    # once loaded): clearing the graph before then would see the startup workflow replace it.
    pg.wait_for_function("() => window.comfyAPI?.app?.app?.graph && window.__loradeckRegistered "
                         "&& window.LiteGraph?.registered_node_types?.LoraDeckStack "
                         "&& window.comfyAPI.app.app.extensionManager?.workflow?.activeWorkflow?.changeTracker",
                         timeout=90_000)
    # The empty graph is then the change tracker's starting point: an undo never goes back to the startup workflow.
    pg.evaluate("() => { const app = window.comfyAPI.app.app; app.graph.clear(); app.canvas.ds.offset = [0, 0];"
                " app.canvas.ds.scale = 1; app.canvas.setDirty(true, true);"
                " const t = app.extensionManager.workflow.activeWorkflow.changeTracker;"
                " t.reset(app.graph.serialize()); t.undoQueue.length = 0; t.redoQueue.length = 0; }")
    pg.errors = errors
    pg.artifacts = server.artifacts  # this frontend's folder of test-artifacts/browser
    yield pg
    name = request.node.name.replace("/", "_")
    with contextlib.suppress(Exception):  # the screenshot is an aid, never the verdict
        pg.screenshot(path=str(server.artifacts / f"{name}.png"))
    context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.fixture
def docs_dir(frontend):
    """Where the documentation's pictures go: test-artifacts/docs from the pinned frontend, else per version."""
    folder = REPO / "test-artifacts" / "docs" if frontend == PINNED else ARTIFACTS / frontend / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder

