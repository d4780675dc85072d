#!/usr/bin/env bash
# The GPU proof in one command, on a bare GPU machine from the repository root with .gpu-kit/ beside it
# (`make gpu-kit` builds it where the package index is reachable):
#   bash bench/gpu_check.sh [OUT] [--steps A,B] [--budget-s S]   installs the kit (no index), runs the steps
#   bash bench/gpu_check.sh --cpu [OUT]   the same steps on the CPU with a simulated GPU (tested in CI)
# It prints the plan first: the steps in order of value, each with its limit, and their total (420 s by
# default, bench/gpu/plan.py). OUT (default bench/results/gpu) receives report.md and report.json, both
# rewritten after every step, mlflow.db, traces/ and logs/. The exit status is the number of failed steps.
set -uo pipefail
options=() out='' cpu=0
while (($#)); do
  case "$1" in
    --cpu) cpu=1 options+=(--cpu) ;;
    --steps|--budget-s) options+=("$1" "${2-}"); shift ;;
    --*) options+=("$1") ;;
    *) out=$(realpath -m -- "$1") ;;  # relative to where it was called from
  esac
  shift
done
cd "$(dirname "$0")/.."
out=${out:-bench/results/gpu}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
if ((cpu)); then
  python=${PYTHON:-.venv/bin/python}
  [ -x "$python" ] || python=python3
else
  python=python3
fi
"$python" -m bench.gpu.plan "${options[@]}" || exit 2  # the plan, before anything is installed
if ((!cpu)); then
  # The image's own Python, torch and transformers; everything else from the kit, into a private folder.
  site=${ECOPIPE_KIT_SITE:-/tmp/ecopipe-gpu-kit}
  ls .gpu-kit/*.whl >/dev/null 2>&1 || { echo "gpu_check: no .gpu-kit/ here: run 'make gpu-kit' first" >&2; exit 1; }
  echo "gpu_check: installing $(ls .gpu-kit/*.whl | wc -l) wheels from .gpu-kit into $site"
  "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu-kit/*.whl || { echo "gpu_check: installing the kit failed" >&2; exit 1; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$python" -m bench.gpu "${options[@]}" "$out"
