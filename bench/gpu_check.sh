#!/usr/bin/env bash
# The GPU proof in one command, on a bare GPU machine from the repository root with .gpu-kit/ beside it
# (`make gpu-kit` builds it where the package index is reachable):
#   bash bench/gpu_check.sh [OUT]         installs the kit (no index), runs every step, writes OUT
#   bash bench/gpu_check.sh --cpu [OUT]   the same steps on the CPU with a simulated GPU (tested in CI)
# OUT (default bench/results/gpu) receives report.md, report.json, mlflow.db and gpu_check.log.
# The exit status is the number of failed steps (bench/gpu/__main__.py).
set -uo pipefail
cd "$(dirname "$0")/.."
mode=() out=bench/results/gpu
for arg in "$@"; do
  case "$arg" in
    --cpu) mode=(--cpu) ;;
    --*) mode+=("$arg") ;;
    *) out=$arg ;;
  esac
done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
if [[ " ${mode[*]-} " == *" --cpu "* ]]; then
  python=${PYTHON:-.venv/bin/python}
  [ -x "$python" ] || python=python3
else
  # The image's own Python, torch and transformers; everything else from the kit, into a private folder.
  python=python3
  site=${ECOPIPE_KIT_SITE:-/tmp/ecopipe-gpu-kit}
  ls .gpu-kit/*.whl >/dev/null 2>&1 || { echo "gpu_check: no .gpu-kit/ here: run 'make gpu-kit' first" >&2; exit 1; }
  echo "gpu_check: installing $(ls .gpu-kit/*.whl | wc -l) wheels from .gpu-kit into $site"
  "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu-kit/*.whl || { echo "gpu_check: installing the kit failed" >&2; exit 1; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$python" -m bench.gpu "${mode[@]}" "$out"
