#!/usr/bin/env bash
# Issue 16's device checks as one prepared script, for a session that is lent a GPU (the device
# tool: 15 minutes of device time per task, one command of at most 10 minutes, 64 MiB carried).
#
#   bash bench/gpu.sh prepare TARBALL   # here, once: wheels of what the device image lacks (.whl) and
#                                       # a copy of the CIFAR-10 tarball (.gpudata); both git-ignored via .git/info/exclude
#   device run, carry [".whl", ".gpudata"], timeout_s 590, command:
#       bash bench/gpu.sh run
#
# `run` works through the checks in order of importance, each under its own time cap, so one
# slow step cannot eat the others' time; everything goes to $OUT/gpu.log and the RESULT lines to
# $OUT/results.txt (the device tool brings $OUT back). The steps before the whole test suite are
# capped at 415 s together, plus ~20 s of wheel install; the suite gets what is left of 570 s
# (GPU_BUDGET_S): give the run timeout_s 590. `python3` is the one on PATH (with a venv: PATH=.venv/bin:$PATH);
# `run --quick` smoke-tests the plumbing (the benchmarks' --quick) on any machine.
set -u
cd "$(dirname "$0")/.."

# the device image: Python 3.12 with torch, numpy, pandas, matplotlib, pytest... (device KINDS.md);
# these are what autoaug needs beyond it, at the versions the CPU test suite runs with
WHEELS=(
  "optuna==5.1.0" "mlflow==3.17.2" "fastapi==0.165.0" "uvicorn==0.55.0" "pydantic==2.14.4"
  "pydantic-settings>=2.2" "python-multipart>=0.0.9" "sqlalchemy==2.1.9" "airbench==0.1.8"
)

prepare() {
  local tarball=${1:?usage: bash bench/gpu.sh prepare PATH/TO/cifar10-jpg.tar.gz}
  [ -f "$tarball" ] || { echo "prepare: $tarball: no such file" >&2; exit 2; }
  grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
  grep -qxF '/.gpudata/' .git/info/exclude 2>/dev/null || echo '/.gpudata/' >>.git/info/exclude
  rm -rf .whl .gpudata && mkdir -p .whl .gpudata
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$tmp" "${WHEELS[@]:0:8}" || exit 1
  # airbench is an sdist only: build its (pure-Python) wheel here
  python3 -m pip wheel -q --no-deps -w "$tmp" "${WHEELS[8]}" || exit 1
  # keep what the image lacks (its package list, as the device tool's KINDS.md gave it on 2026-11-17)
  python3 - "$tmp" <<'EOF'
import re, shutil, sys
from pathlib import Path
present = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil
pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark
pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests
rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate
tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
kept = 0
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    if norm(wheel.name.split("-")[0]) not in present:
        shutil.copy(wheel, ".whl")
        kept += wheel.stat().st_size
print(f".whl: {len(list(Path('.whl').glob('*.whl')))} wheels, {kept / 2**20:.1f} MiB")
EOF
  rm -rf "$tmp"
  cp "$tarball" .gpudata/cifar10-jpg.tar.gz
  du -sh .whl .gpudata
  echo "carried with the working tree: $(git ls-files -z | du -ch --files0-from=- | tail -1 | cut -f1) tracked," \
       "plus .whl and .gpudata (limit 64 MiB)"
}

step() {  # step NAME CAP_S COMMAND...: run under a time cap, log it, never stop the script
  local name=$1 cap=$2
  shift 2
  if [ "$cap" -lt 10 ]; then echo "=== $name: skipped, ${cap}s left" | tee -a "$LOG"; return; fi
  echo "=== $(date +%T) $name (cap ${cap}s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout --kill-after=10 "$cap" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - start)) s" | tee -a "$LOG"
  grep -h '^RESULT' "$LOG" | sort -u >"$OUT/results.txt"
}

run() {
  OUT=${OUT:-/tmp/gpu-out}
  mkdir -p "$OUT"
  LOG=$OUT/gpu.log
  export PYTHONUNBUFFERED=1 MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT=1
  local quick=() dev STORE=${GPU_STORE:-/tmp/raw}
  [ "${1:-}" = "--quick" ] && quick=(--quick)  # a smoke run of the plumbing (e.g. here, on the CPU)
  if ! python3 -c 'import optuna, mlflow, fastapi' 2>/dev/null; then  # the device image: what it lacks, from .whl
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl >>"$LOG" 2>&1 || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
    export PYTHONPATH=$PWD:/tmp/site
    # the console script that tests and benchmarks call beside sys.executable (tests/projects.py, bench/workers.py)
    local bin
    bin=$(dirname "$(python3 -c 'import sys; print(sys.executable)')")
    [ -x "$bin/autoaug" ] || printf '#!/bin/sh\nexec %s -c "import sys; from pipeline.cli import main; sys.exit(main())" "$@"\n' \
      "$bin/python3" >"$bin/autoaug" && chmod +x "$bin/autoaug"
  fi
  dev=$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')

  step env 20 bash -c 'nvidia-smi -L; python3 -c "import torch, optuna, mlflow, fastapi, pydantic;
print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0), optuna.__version__, mlflow.__version__)"'
  step ingest 45 python3 -c "import sys; from pipeline.cli import main; sys.exit(main())" \
    ingest "${GPU_DATA:-.gpudata/cifar10-jpg.tar.gz}" --store "$STORE" --no-dvc
  # the CUDA contract first: CPU/CUDA parity of every op, the CUDA paths of trainer and service
  step cuda-tests 60 python3 -m pytest -q -p no:cacheprovider -rfE -k "cuda or gpu or device" tests
  step accuracy-50k-gpu 90 python3 -m bench.accuracy --data "$STORE" --setting 50k-gpu --seeds 0 1 "${quick[@]}"
  step airbench-peer 50 python3 -m bench.airbench_peer --data "$STORE" --runs 3 "${quick[@]}"
  step augment 40 python3 -m bench.augment --data "$STORE" --device "$dev" "${quick[@]}"
  step searchcost 110 python3 -m bench.searchcost --data "$STORE" --cap-s 90 "${quick[@]}"
  # the whole suite with CUDA present (the DVC end-to-end test needs dvc, which is not carried);
  # -v: a suite stopped at its cap still shows every result it reached
  step all-tests $(( ${GPU_BUDGET_S:-570} - SECONDS )) python3 -m pytest -v -p no:cacheprovider -rfE --ignore=tests/test_dvc_pipeline.py \
    --durations=10 tests
  echo "=== done at $(date +%T); RESULT lines in results.txt" | tee -a "$LOG"
}

case "${1:-}" in
  prepare) prepare "${2:-}" ;;
  run) run "${2:-}" ;;
  *) echo "usage: bash bench/gpu.sh prepare TARBALL | run [--quick]" >&2; exit 2 ;;
esac
