#!/usr/bin/env bash
# One-shot GPU benchmark for a bare machine that has Python 3.12 and torch with CUDA, nothing else.
#
#   bash scripts/gpu_bench.sh            # from the repository root; carry .host/ComfyUI and .whl with it
#
# Needs: the host tree at $COMFYUI_PATH (default .host/ComfyUI) and, for the host's few compiled or
# pure-Python imports this machine may lack, the wheels in .whl/ (`make gpu-wheels` fetches them). Wheels
# are unpacked into a private folder on PYTHONPATH, only for modules that do not import already; nothing
# is installed into the machine's Python. Host imports the benchmark never exercises (tokenizers,
# image/video I/O, samplers) are stood in for by scripts/bench_models.py. No downloads.
# Prints the markdown tables and writes them to $OUT/gpu_benchmarks.md (OUT defaults to /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp}
export COMFYUI_PATH=${COMFYUI_PATH:-$PWD/.host/ComfyUI}
DEPS=${TMPDIR:-/tmp}/loradeck-bench-deps
mkdir -p "$DEPS" "$OUT"

# module:wheel-name-prefix for what `import comfy.sd, comfy.model_management, nodes` and this pack need.
for pair in numpy:numpy safetensors:safetensors psutil:psutil typing_extensions:typing_extensions \
            annotated_types:annotated_types typing_inspection:typing_inspection pydantic_core:pydantic_core \
            pydantic:pydantic- pydantic_settings:pydantic_settings dotenv:python_dotenv packaging:packaging; do
  module=${pair%%:*}; prefix=${pair#*:}
  if ! PYTHONPATH="$DEPS${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import $module" 2>/dev/null; then
    wheel=$(ls .whl/"$prefix"*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then echo "missing $module and no wheel for it in .whl/" >&2; exit 1; fi
    echo "unpacking $wheel"
    "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$DEPS"
  fi
done
export PYTHONPATH="$DEPS${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
REPORT="$OUT/gpu_benchmarks.md"
rm -f "$REPORT"
# SD1.5 first (N = 1, 8 and the per-forward table for N = 1, 4, 8, 16; about 2-3 minutes), then SDXL at
# N = 8 only (its rank-32 kohya files are 217 MiB each; about 3-4 minutes). SDXL=0 skips the second.
timeout "${SD15_TIMEOUT:-300}" "$PY" scripts/bench.py --device cuda --quick --markdown "$REPORT" \
  || echo "SD1.5 run failed or timed out" >&2
if [ "${SDXL:-1}" != 0 ]; then
  timeout "${SDXL_TIMEOUT:-270}" "$PY" scripts/bench.py --device cuda --quick --arch sdxl --n 8 --forward-n 1,8 \
    --markdown "$REPORT" || echo "SDXL run failed or timed out" >&2
fi
echo
echo "===== $REPORT"
cat "$REPORT" 2>/dev/null | grep -v '^<!-- raw' || true
