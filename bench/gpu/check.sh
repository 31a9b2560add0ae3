#!/usr/bin/env bash
# One GPU call, at most 420 s, that measures everything (issues 12 and 24; docs/gpu.md):
#
#   run(command="bash bench/gpu/check.sh", carry=[".gpu-wheels"], timeout_s=420)
#   bash bench/gpu/check.sh --only scale-2m,cuda-tests   a rerun of some stages (CHECK_BUDGET_S=220)
#   bash bench/gpu/check.sh --dry-run                    on CPU: the same stages at tiny sizes (the
#                                                        default test suite runs this)
#
# Stages, each under its own timeout, all inside CHECK_BUDGET_S seconds (default 390, so the call
# ends before its 420 s limit); the limits before scale-2m sum to 335 s, and 30 s stay for the
# last stage's SIGKILL grace and the summary, so scale-2m gets at least 25 s and whatever the
# earlier stages left:
#   wheels          30  install the carried wheels from .gpu-wheels/ (no compiling: binary only)
#   env             20  GPU, driver, versions, whether each kernel package imports -> env.json
#   cuda-tests     100  pytest -m cuda, real-kernel parity tests included       -> cuda_tests.xml
#   scale-131k      45  ZeRO-2 bf16 steps of configs/131k.yaml, kernels auto     -> scale.jsonl
#   scale-1m-cuda   70  configs/1m.yaml, the real kernels (model.kernels=cuda)   -> scale.jsonl
#   scale-1m-torch  70  configs/1m.yaml, the torch fallback (torch-cuda set)     -> scale.jsonl
#   scale-2m      rest  configs/1m.yaml at 2,097,152 bp, kernels auto           -> scale.jsonl
#   summary             stages + measured vs predicted memory                   -> summary.json
# A stage that hits its limit gets SIGINT (`timeout -s INT`; timeout resets SIGINT for its child
# even when this script runs in the background), so pytest stops after the running test and still
# writes its JUnit XML, and SIGKILL 15 s later. Scale runs append a JSON line per step as they
# go; every stage appends its exit code and time to stages.jsonl as soon as it ends; check.log
# has all output (pytest -v: one line per test as it finishes). 6 files come back (8 at most).
set -uo pipefail
cd "$(dirname "$0")/../.."

DRY=0
ONLY=""
while (( $# )); do
  case "$1" in
    --dry-run) DRY=1 ;;
    --only) ONLY=",${2:?--only needs a comma-separated list of stages},"; shift ;;
    *) echo "usage: bash bench/gpu/check.sh [--dry-run] [--only STAGE,...]" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "${OUT:-}" ]]; then
  OUT=$(mktemp -d /tmp/gpu-check.XXXXXX)
  echo "OUT not set: writing to $OUT"
fi
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${CHECK_BUDGET_S:-$(( DRY ? 1800 : 390 ))}  # the dry run: CPU speed under load, not the GPU call
SUMMARY_RESERVE=15
KILL_AFTER=15
START=$(date +%s)
LOG="$OUT/check.log"
export PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}

left() { echo $((BUDGET - ($(date +%s) - START))); }

# stage NAME LIMIT_SECONDS COMMAND...: under min(LIMIT, time left - what the summary needs);
# LIMIT 0 means all the time left. Skipped when --only does not name it.
stage() {
  local name=$1 limit=$2
  shift 2
  if [[ -n $ONLY && $name != wheels && $name != env && $ONLY != *",$name,"* ]]; then
    return
  fi
  local remaining=$(( $(left) - SUMMARY_RESERVE - KILL_AFTER ))
  (( limit == 0 || limit > remaining )) && limit=$remaining
  if (( limit < 10 )); then
    echo "{\"stage\": \"$name\", \"rc\": null, \"seconds\": 0, \"timed_out\": false, \"skipped\": \"no time left\"}" >>"$OUT/stages.jsonl"
    echo "=== $name: skipped, no time left" | tee -a "$LOG"
    return
  fi
  echo "=== $name (limit ${limit}s, $(left)s left): $*" | tee -a "$LOG"
  local t0=$(date +%s)
  timeout -s INT --kill-after=$KILL_AFTER "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - t0 ))
  local timed_out=false
  (( rc == 124 || rc == 137 )) && timed_out=true
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $took, \"timed_out\": $timed_out, \"limit\": $limit}" >>"$OUT/stages.jsonl"
  echo "=== $name: rc=$rc in ${took}s" | tee -a "$LOG"
}

if (( DRY == 0 )) && compgen -G ".gpu-wheels/*.whl" >/dev/null; then
  # deepspeed, pydantic, webdataset, pyfaidx... (bench/gpu/stage.sh) and the kernel wheels built
  # on the CPU machine (bench/gpu/build_wheels.sh): binaries only, nothing compiles here
  stage wheels 30 "$PY" -m pip install -q --no-index --no-deps --only-binary=:all: --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .gpu-wheels/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stage env 20 "$PY" bench/gpu/report.py env --out "$OUT/env.json"

SCALE=("$PY" bench/gpu/scale_step.py --out "$OUT/scale.jsonl")
TORCH_SET=(--set model.kernels=reference --set model.fusion_kernel=pieces)  # torch-cuda on a GPU
if (( DRY == 1 )); then
  stage cuda-tests 300 "$PY" -m pytest -q -p no:cacheprovider -m cuda --collect-only tests
  # the real configs, shrunk: same code paths (checkpointing, loss chunks, MoE), seconds on CPU
  TINY=(--set model.n_layers=2 --set model.num_experts=4 --set model.loss_chunk=64 --set train.precision=fp32)
  stage scale-131k 300 "${SCALE[@]}" --label 131k --config configs/131k.yaml --seq-len 128 --steps 1 "${TINY[@]}"
  # model.kernels=cuda cannot run on CPU: auto stands in for it
  stage scale-1m-cuda 300 "${SCALE[@]}" --label 1m-cuda --config configs/1m.yaml --seq-len 256 --steps 1 \
    "${TINY[@]}" --set model.kernels=auto
  stage scale-1m-torch 300 "${SCALE[@]}" --label 1m-torch --config configs/1m.yaml --seq-len 256 --steps 1 \
    "${TINY[@]}" "${TORCH_SET[@]}"
  stage scale-2m 0 "${SCALE[@]}" --label 2m --config configs/1m.yaml --seq-len 512 --steps 1 "${TINY[@]}"
else
  stage cuda-tests 100 "$PY" -m pytest -v -p no:cacheprovider -m cuda -o addopts="" --timeout 60 \
    --junitxml="$OUT/cuda_tests.xml" tests
  stage scale-131k 45 "${SCALE[@]}" --label 131k --config configs/131k.yaml --steps 1
  stage scale-1m-cuda 70 "${SCALE[@]}" --label 1m-cuda --config configs/1m.yaml --steps 1 --set model.kernels=cuda
  stage scale-1m-torch 70 "${SCALE[@]}" --label 1m-torch --config configs/1m.yaml --steps 1 "${TORCH_SET[@]}"
  stage scale-2m 0 "${SCALE[@]}" --label 2m --config configs/1m.yaml --seq-len 2097152 --steps 1
fi

"$PY" bench/gpu/report.py summary --dir "$OUT" 2>&1 | tee -a "$LOG"
echo "results in $OUT after $(( $(date +%s) - START ))s: $(ls "$OUT" | tr '\n' ' ')"
