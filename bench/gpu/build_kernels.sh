#!/usr/bin/env bash
# Stage 2 of the GPU check (issue 12), only if device time is left after bench/gpu/check.sh:
# build causal-conv1d and mamba-ssm from the sources bench/gpu/stage.sh --kernel-sdists staged,
# time each build, then run the real-kernel parity tests and the 1 Mbp step with kernels: cuda.
#
#   run(command="bash bench/gpu/build_kernels.sh", carry=[".gpu-wheels"], timeout_s=600)
#
# Both setup.py files ignore TORCH_CUDA_ARCH_LIST and compile for nine architectures under CUDA
# 13 (sm_75 ... sm_121); the copy built here is patched to sm_90 (Hopper) alone, which is what
# makes the build fit a call. flash-attn is not built (tens of minutes): per-stream attention and
# the fusion pieces use torch's own flash kernel, the same FlashAttention-2 code on Hopper.
# Results: $OUT/build.jsonl (one line per step: seconds, exit code, how far it got) and build.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder that collects results}"
PY=${PYTHON:-python3}
BUDGET=${BUILD_BUDGET_S:-570}
START=$(date +%s)
LOG="$OUT/build.log"
WORK=/tmp/kernel-build
mkdir -p "$WORK/wheels"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=9.0
export CAUSAL_CONV1D_FORCE_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE  # never try to download a wheel

step() {  # step NAME LIMIT COMMAND...: timed, recorded, never longer than the time left
  local name=$1 limit=$2
  shift 2
  local remaining=$(( BUDGET - ($(date +%s) - START) - 10 ))
  (( limit > remaining )) && limit=$remaining
  (( limit < 10 )) && { echo "{\"step\": \"$name\", \"skipped\": \"no time left\"}" >>"$OUT/build.jsonl"; return 1; }
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 )), \"limit\": $limit}" >>"$OUT/build.jsonl"
  return $rc
}

only_sm90() {  # drop every -gencode pair of setup.py but compute_90/sm_90
  "$PY" - "$1/setup.py" <<'EOF'
import re
import sys
path = sys.argv[1]
text = open(path).read()
pair = re.compile(r'( *)cc_flag\.append\("-gencode"\)\n\s*cc_flag\.append\("arch=compute_(\d+),code=sm_\d+"\)\n')
patched, n = pair.subn(lambda m: m.group(0) if m.group(2) == "90" else "", text)
if n == 0 or "compute_90" not in patched:
    sys.exit(f"{path}: no -gencode pairs found to patch; build it as shipped")
open(path, "w").write(patched)
print(f"{path}: kept sm_90 of {n} architectures")
EOF
}

build() {  # build PACKAGE SDIST LIMIT
  local src
  tar xzf "$2" -C "$WORK" && src="$WORK/$(basename "$2" .tar.gz)" && only_sm90 "$src" >>"$LOG" 2>&1 \
    && step "build-$1" "$3" "$PY" -m pip wheel -v --no-deps --no-build-isolation -w "$WORK/wheels" "$src" \
    && step "install-$1" 60 "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$WORK/wheels/$1"-*.whl
}

if compgen -G ".gpu-wheels/*.whl" >/dev/null; then
  step wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-wheels/*.whl
fi
export PYTHONPATH="$PWD:/tmp/site"
ls .gpu-wheels/sdist/*.tar.gz >/dev/null 2>&1 || { echo "no sdists: run bash bench/gpu/stage.sh --kernel-sdists" >&2; exit 2; }
nvcc --version >>"$LOG" 2>&1
built=0
build causal_conv1d .gpu-wheels/sdist/causal_conv1d-*.tar.gz 200 && build mamba_ssm .gpu-wheels/sdist/mamba_ssm-*.tar.gz 330 \
  && built=1
if (( built )); then
  step parity-tests 90 "$PY" -m pytest -q -p no:cacheprovider -m cuda -o addopts="" --timeout 80 \
    tests/test_kernel_dispatch.py tests/test_fusion_pieces.py
  step scale-1m-cuda 200 "$PY" bench/gpu/scale_step.py --out "$OUT/scale_cuda.jsonl" --label 1m-cuda \
    --config configs/1m.yaml --steps 1 --set model.kernels=cuda
fi
cat "$OUT/build.jsonl"
