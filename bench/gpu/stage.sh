#!/usr/bin/env bash
# Stage, on this (CPU) machine, every wheel the GPU image lacks for our package and its tests, and
# print the device call that runs bench/gpu/check.sh with them (issue 12; docs/gpu.md).
#
#   bash bench/gpu/stage.sh                  download/build into .gpu-wheels/ (git-ignored)
#   bash bench/gpu/stage.sh --list           print the pinned list and the call; no network
#
# Versions are those of the venv the tests pass in (PYTHON, default .venv/bin/python), so the GPU
# run imports what CI tested. The image (docs/gpu.md) has python 3.12, torch 2.11 cu130, triton,
# numpy, pyyaml, tqdm, safetensors, tensorboard, einops, msgpack, ninja, psutil, py-cpuinfo,
# packaging, pygments; not what is listed below. Wheels go as cp312 manylinux x86_64 or pure
# Python; deepspeed has no wheel on PyPI, so it is built here (pure Python, seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."

MODE=stage
case "${1:-}" in
  --list) MODE=list ;;
  "") ;;
  *) echo "usage: bash bench/gpu/stage.sh [--list]" >&2; exit 2 ;;
esac
PY=${PYTHON:-.venv/bin/python}
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('deepspeed') is None)" 2>/dev/null; then
  echo "error: $PY cannot import deepspeed; set PYTHON to the venv that passes the tests (make setup)" >&2
  exit 2
fi
WHEELS=.gpu-wheels
MAX_MIB=48  # the device call carries at most 64 MiB with the working tree
# what the image lacks: deepspeed and its pydantic stack, the data packages, and the test runner
# (pytest is in the image's list, but a version we tested costs half a MiB)
PACKAGES="deepspeed hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions
webdataset braceexpand pyfaidx pytest pytest-timeout pluggy iniconfig"

pins=$("$PY" - $PACKAGES <<'EOF'
import importlib.metadata as m
import sys
for name in sys.argv[1:]:
    print(f"{name}=={m.version(name)}")
EOF
)

print_call() {
  cat <<EOF
device call (the run tool; docs/gpu.md), after bash bench/gpu/build_wheels.sh put the kernel wheels here:
  run(command="bash bench/gpu/check.sh", carry=["$WHEELS"], timeout_s=420)
EOF
}

if [[ $MODE == list ]]; then
  echo "$pins"
  print_call
  exit 0
fi

rm -rf "$WHEELS.tmp"
mkdir -p "$WHEELS.tmp"
for pin in $pins; do
  if [[ $pin == deepspeed==* ]]; then
    # its setup.py imports torch: build against the venv's torch, no isolation, no dependencies
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS.tmp" "$pin"
  else
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$WHEELS.tmp" "$pin"
  fi
done
total_kib=$(du -sk "$WHEELS.tmp" | cut -f1)
if (( total_kib > MAX_MIB * 1024 )); then
  echo "error: staged files take $((total_kib / 1024)) MiB, over the ${MAX_MIB} MiB budget of a device call" >&2
  exit 1
fi
# the kernel wheels bench/gpu/build_wheels.sh built (two hours of CPU) survive a re-stage
for kept in "$WHEELS"/causal_conv1d-*.whl "$WHEELS"/mamba_ssm-*.whl; do
  [[ -f $kept ]] && cp "$kept" "$WHEELS.tmp/"
done
rm -rf "$WHEELS"
mv "$WHEELS.tmp" "$WHEELS"  # complete or not at all
ls -l "$WHEELS"
echo "staged $(ls "$WHEELS"/*.whl | wc -l) wheels, $((total_kib / 1024)) MiB in $WHEELS/"
print_call
bash bench/gpu/carry_size.sh
