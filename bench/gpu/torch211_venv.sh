#!/usr/bin/env bash
# Run the kernel-glue tests under the device's torch (2.11.0, CPython 3.12) on this CPU machine
# (issue 24; docs/gpu.md): every other test runs the dev venv's torch, but the aten flash-op
# schemas, FlexAttention and BlockMask constructors the CUDA glue calls must match the torch the
# GPU image has. `make test-torch211` runs this.
#
#   bash bench/gpu/torch211_venv.sh [PYTEST ARGS...]   default: the glue test files below
#
# The venv .cache/torch211/venv gets PyPI's torch 2.11.0 (the cu130 build, the device's very
# binary; it runs on CPU) and the project's dependencies at the dev venv's versions; the package
# is imported from this tree (PYTHONPATH), not installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
TORCH_VERSION=2.11.0
VENV=.cache/torch211/venv
DEV_PY=${PYTHON:-.venv/bin/python}
GLUE_TESTS=(tests/test_kernel_dispatch.py tests/test_scan.py tests/test_fusion_pieces.py tests/test_fusion_attention.py)
DEPS="deepspeed hjson pydantic webdataset pyfaidx pyyaml tensorboard safetensors tqdm numpy pytest pytest-timeout"

source bench/gpu/py312.sh
if ! "$VENV/bin/python" -c "import torch, deepspeed, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  "$DEV_PY" -c 'import deepspeed' 2>/dev/null || { echo "error: $DEV_PY cannot import deepspeed; set PYTHON to the dev venv (make setup)" >&2; exit 2; }
  pins=$("$DEV_PY" -c 'import importlib.metadata as m, sys; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' $DEPS)
  t0=$(date +%s)
  rm -rf "$VENV"
  "$PY312" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  PIP_CONSTRAINT="" "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
  # deepspeed's setup.py imports torch: build it against torch 2.11, not an isolated newest one
  # shellcheck disable=SC2086
  PIP_CONSTRAINT="" "$VENV/bin/python" -m pip install -q --no-build-isolation "torch==$TORCH_VERSION" $pins
  echo "torch $TORCH_VERSION venv ready in $(( $(date +%s) - t0 )) s"
fi
(( $# )) || set -- "${GLUE_TESTS[@]}"
t0=$(date +%s)
rc=0
CUDA_VISIBLE_DEVICES="" PYTHONPATH="$PWD" TORCH_EXTENSIONS_DIR="$PWD/.cache/torch211/torch_extensions" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || rc=$?
echo "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'): glue tests rc=$rc in $(( $(date +%s) - t0 )) s"
exit $rc
