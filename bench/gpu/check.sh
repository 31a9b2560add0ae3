#!/usr/bin/env bash
# One GPU call that proves the CUDA path and measures memory and speed (issue 12). docs/gpu.md.
#
#   bash bench/gpu/check.sh              on the GPU machine; everything goes to $OUT
#   bash bench/gpu/check.sh --dry-run    on CPU: the same stages at tiny sizes (the default test
#                                        suite runs this, so the script cannot rot)
#
# Stages, each under its own timeout so that one hang cannot eat the call, all inside
# CHECK_BUDGET_S seconds (default 480, the 8 minutes the issue allows):
#   wheels       install the wheels bench/gpu/stage.sh put in .gpu-wheels/ (GPU only)
#   env          GPU, driver, torch/triton/deepspeed versions         -> env.json
#   cuda-tests   pytest -m cuda (--collect-only in a dry run)        -> cuda_tests.xml
#   scale-131k   ZeRO-2 bf16 steps of configs/131k.yaml              -> scale.jsonl
#   scale-1m     ZeRO-2 bf16 steps of configs/1m.yaml                -> scale.jsonl
#   scale-2m     configs/1m.yaml at 2,097,152 bp, with the time left -> scale.jsonl
#   summary      stages + measured vs predicted memory               -> summary.json (and a table)
# Every stage appends its exit code and time to stages.jsonl as soon as it ends; the log of all
# output is check.log. At most 8 files come back from a device call: these are 6.
set -uo pipefail
cd "$(dirname "$0")/../.."

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash bench/gpu/check.sh [--dry-run]" >&2; exit 2 ;;
esac
if [[ -z "${OUT:-}" ]]; then
  OUT=$(mktemp -d /tmp/gpu-check.XXXXXX)
  echo "OUT not set: writing to $OUT"
fi
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${CHECK_BUDGET_S:-480}
START=$(date +%s)
LOG="$OUT/check.log"
export PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}

left() { echo $((BUDGET - ($(date +%s) - START))); }

# stage NAME LIMIT_SECONDS COMMAND...: run under min(LIMIT, time left - 20 s kept for the summary)
stage() {
  local name=$1 limit=$2
  shift 2
  local remaining=$(( $(left) - 20 ))
  (( limit > remaining )) && limit=$remaining
  if (( limit < 10 )); then
    echo "{\"stage\": \"$name\", \"rc\": null, \"seconds\": 0, \"timed_out\": false, \"skipped\": \"no time left\"}" >>"$OUT/stages.jsonl"
    echo "=== $name: skipped, no time left" | tee -a "$LOG"
    return
  fi
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - t0 ))
  local timed_out=false
  (( rc == 124 || rc == 137 )) && timed_out=true
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $took, \"timed_out\": $timed_out, \"limit\": $limit}" >>"$OUT/stages.jsonl"
  echo "=== $name: rc=$rc in ${took}s" | tee -a "$LOG"
}

if (( DRY == 0 )) && compgen -G ".gpu-wheels/*.whl" >/dev/null; then
  # the image lacks deepspeed, webdataset, pyfaidx, pydantic...: bench/gpu/stage.sh staged them
  stage wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu-wheels/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stage env 60 "$PY" bench/gpu/report.py env --out "$OUT/env.json"

SCALE=("$PY" bench/gpu/scale_step.py --out "$OUT/scale.jsonl")
if (( DRY == 1 )); then
  stage cuda-tests 120 "$PY" -m pytest -q -p no:cacheprovider -m cuda --collect-only tests
  # the real configs, shrunk: same code paths (checkpointing, loss chunks, MoE), seconds on CPU
  TINY=(--set model.n_layers=2 --set model.num_experts=4 --set model.loss_chunk=64 --set train.precision=fp32)
  stage scale-131k 120 "${SCALE[@]}" --label 131k --config configs/131k.yaml --seq-len 128 --steps 1 "${TINY[@]}"
  stage scale-1m 120 "${SCALE[@]}" --label 1m --config configs/1m.yaml --seq-len 256 --steps 1 "${TINY[@]}"
  stage scale-2m 120 "${SCALE[@]}" --label 2m --config configs/1m.yaml --seq-len 512 --steps 1 "${TINY[@]}"
else
  stage cuda-tests 210 "$PY" -m pytest -q -p no:cacheprovider -m cuda -o addopts="" --timeout 150 \
    --junitxml="$OUT/cuda_tests.xml" tests
  stage scale-131k 80 "${SCALE[@]}" --label 131k --config configs/131k.yaml --steps 2
  stage scale-1m 110 "${SCALE[@]}" --label 1m --config configs/1m.yaml --steps 1
  stage scale-2m 600 "${SCALE[@]}" --label 2m --config configs/1m.yaml --seq-len 2097152 --steps 1
fi

"$PY" bench/gpu/report.py summary --dir "$OUT" 2>&1 | tee -a "$LOG"
echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
