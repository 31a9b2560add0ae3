#!/usr/bin/env bash
# Build the real Mamba kernels (causal-conv1d, mamba-ssm) as wheels for the GPU machine, HERE, on
# the CPU machine (issue 24; docs/gpu.md): the device has 15 minutes in all and must not compile.
#
#   bash bench/gpu/build_wheels.sh               build both into .gpu-wheels/ (~115 min of 2 cores)
#   bash bench/gpu/build_wheels.sh --only causal-conv1d
#   bash bench/gpu/build_wheels.sh --dry-run     everything but the builds: the build venv and its
#                                                downloads, the sources patched by sm90_setup.py and
#                                                checked, one nvcc compile against torch's CUDA headers
#
# Target = the device image: CPython 3.12, torch 2.11.0 (cu130), sm_90 (H200). The build-only venv
# .cache/gpu-build/venv holds the CUDA build of torch 2.11.0 from PyPI and the CUDA 13.0 toolchain
# as PyPI wheels (nvcc, crt, cudart, cccl headers; torch's own nvidia-* dependencies bring the
# cuBLAS/cuSPARSE/cuSOLVER/... headers its ATen/cuda headers include); CUDA_HOME is assembled from
# them, so no system CUDA is used. TORCH_CUDA_ARCH_LIST=9.0, and bench/gpu/sm90_setup.py rewrites
# each setup.py to sm_90 alone without -lineinfo (both ignore TORCH_CUDA_ARCH_LIST); the .so files
# are stripped. Each build prints one JSON line (seconds, wheel bytes); the wheels are git-ignored
# and travel to the device through `carry` (bash bench/gpu/carry_size.sh sums what that takes).
set -euo pipefail
cd "$(dirname "$0")/../.."

DRY=0
ONLY=""
while (( $# )); do
  case "$1" in
    --dry-run) DRY=1 ;;
    --only) ONLY=${2:?--only needs causal-conv1d or mamba-ssm}; shift ;;
    *) echo "usage: bash bench/gpu/build_wheels.sh [--dry-run] [--only causal-conv1d|mamba-ssm]" >&2; exit 2 ;;
  esac
  shift
done
TORCH_VERSION=2.11.0
CUDA_SERIES=13.0
PACKAGES=(causal-conv1d==1.7.0 mamba-ssm==2.3.2.post1)
if [[ -n $ONLY ]]; then
  case "$ONLY" in
    causal-conv1d) PACKAGES=("${PACKAGES[0]}") ;;
    mamba-ssm) PACKAGES=("${PACKAGES[1]}") ;;
    *) echo "error: --only $ONLY: expected causal-conv1d or mamba-ssm" >&2; exit 2 ;;
  esac
fi
# the CUDA toolchain and headers torch's CUDA headers need beyond what torch itself depends on
TOOLCHAIN=("nvidia-cuda-nvcc==$CUDA_SERIES.*" "nvidia-cuda-crt==$CUDA_SERIES.*" "nvidia-cuda-runtime==$CUDA_SERIES.*"
  "nvidia-cuda-cccl==$CUDA_SERIES.*" "nvidia-nvvm==$CUDA_SERIES.*"
  "nvidia-cuda-cuobjdump>=13.2,<14")  # cuobjdump only inspects what was built: no 13.0 wheel exists
BUILD=.cache/gpu-build
VENV=$BUILD/venv
WHEELS=.gpu-wheels

source bench/gpu/py312.sh

say() { echo "[build_wheels $(date -u +%H:%M:%S)] $*"; }

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  say "build venv $VENV (CPython $("$PY312" -c 'import platform; print(platform.python_version())'), torch $TORCH_VERSION CUDA build, CUDA $CUDA_SERIES wheels)"
  rm -rf "$VENV"
  "$PY312" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel ninja packaging
  # PyPI's Linux torch wheel is the CUDA build; PIP_CONSTRAINT="" lifts this machine's torch cap
  PIP_CONSTRAINT="" "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
fi
PIP_CONSTRAINT="" "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" "${TOOLCHAIN[@]}"  # no-op once there
"$VENV/bin/python" - "$CUDA_SERIES" <<'EOF'
import sys, torch
if not (torch.version.cuda or "").startswith(sys.argv[1]):
    sys.exit(f"error: the build venv's torch {torch.__version__} is built for CUDA {torch.version.cuda}, "
             f"not {sys.argv[1]} (the device's)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, python {sys.version.split()[0]}")
EOF

# CUDA_HOME out of the wheels: the CUDA 13 wheels share one tree, nvidia/cu13/{bin,include,lib,nvvm};
# a tree of symlinks over it adds what torch's cpp_extension links with (lib64/, libcudart.so)
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CU=$SITE/nvidia/cu${CUDA_SERIES%%.*}
CUDA_HOME=$PWD/$BUILD/cuda
rm -rf "$CUDA_HOME"
mkdir -p "$CUDA_HOME"
cp -rs "$CU"/. "$CUDA_HOME"/
ln -s lib "$CUDA_HOME/lib64"
ln -sf libcudart.so.${CUDA_SERIES%%.*} "$CUDA_HOME/lib/libcudart.so"
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH" CPATH="$CUDA_HOME/include/cccl${CPATH:+:$CPATH}"
say "nvcc: $("$CUDA_HOME/bin/nvcc" --version | tail -2 | head -1)"
for header in cuda_runtime.h cublas_v2.h cusparse.h cusolverDn.h curand.h cccl/cub/cub.cuh; do
  [[ -e $CUDA_HOME/include/$header ]] || { echo "error: $header missing from the CUDA wheels in $CU" >&2; exit 1; }
done

export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-2} NVCC_THREADS=${NVCC_THREADS:-1}
export CAUSAL_CONV1D_FORCE_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE  # build; never try to download a wheel

# one compile against torch's CUDA headers: proves the toolchain before a two-hour build
PROBE=$BUILD/probe
mkdir -p "$PROBE"
printf '#include <torch/extension.h>\n#include <ATen/cuda/CUDAContext.h>\n#include <cub/cub.cuh>\n__global__ void k(float *x) { x[0] = 1.f; }\n' >"$PROBE/probe.cu"
INCLUDES=$("$VENV/bin/python" -c 'from torch.utils.cpp_extension import include_paths; print(" ".join("-I" + p for p in include_paths("cuda")))')
t0=$(date +%s)
# shellcheck disable=SC2086
"$CUDA_HOME/bin/nvcc" -c -std=c++17 -gencode arch=compute_90,code=sm_90 $INCLUDES \
  -I"$("$PY312" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" "$PROBE/probe.cu" -o "$PROBE/probe.o"
"$CUDA_HOME/bin/cuobjdump" --list-elf "$PROBE/probe.o" | grep -q sm_90 || { echo "error: the probe object has no sm_90 code" >&2; exit 1; }
say "probe compile against torch $TORCH_VERSION headers for sm_90: ok in $(( $(date +%s) - t0 )) s"

mkdir -p "$BUILD/sdist" "$BUILD/dist" "$WHEELS"
MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE "$VENV/bin/python" -m pip download -q --no-deps \
  --no-binary=:all: --no-build-isolation -d "$BUILD/sdist" "${PACKAGES[@]}"

for spec in "${PACKAGES[@]}"; do
  name=${spec%%==*}
  version=${spec#*==}
  module=${name//-/_}
  src=$BUILD/src/$module-$version
  rm -rf "$src"
  mkdir -p "$BUILD/src"
  tar xzf "$BUILD/sdist/$module-$version.tar.gz" -C "$BUILD/src"
  "$VENV/bin/python" bench/gpu/sm90_setup.py "$src/setup.py"  # exits 1 if other arches remain
  if (( DRY )); then
    say "$name $version: patched and checked; --dry-run: not built"
    continue
  fi
  rm -f "$BUILD/dist/$module"-*.whl
  say "$name $version: building (MAX_JOBS=$MAX_JOBS, sm_90)"
  t0=$(date +%s)
  nice -n "${NICE:-19}" "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$BUILD/dist" "$src"
  seconds=$(( $(date +%s) - t0 ))
  wheel=$(ls "$BUILD/dist/$module"-*.whl)
  # strip the extension modules and repack (wheel pack rewrites RECORD)
  rm -rf "$BUILD/unpacked"
  "$VENV/bin/python" -m wheel unpack -d "$BUILD/unpacked" "$wheel" >/dev/null
  find "$BUILD/unpacked" -name '*.so' -exec strip --strip-unneeded {} +
  rm -f "$WHEELS/$module"-*.whl
  "$VENV/bin/python" -m wheel pack -d "$WHEELS" "$BUILD/unpacked"/* >/dev/null
  out=$(ls "$WHEELS/$module"-*.whl)
  echo "{\"package\": \"$name\", \"version\": \"$version\", \"build_seconds\": $seconds, \"wheel\": \"$out\", \"bytes\": $(stat -c %s "$out"), \"unstripped_bytes\": $(stat -c %s "$wheel")}"
done
(( DRY )) && exit 0
# what mamba_ssm/__init__ imports beyond torch, at the image's versions, for the import check
"$VENV/bin/python" -m pip install -q pyyaml einops "transformers==5.17.0"
modules=("${PACKAGES[@]%%==*}")
CUDA_VISIBLE_DEVICES="" "$VENV/bin/python" bench/gpu/wheel_check.py --cuobjdump "$CUDA_HOME/bin/cuobjdump" \
  $(for m in "${modules[@]//-/_}"; do ls "$WHEELS/$m"-*.whl; done)
bash bench/gpu/carry_size.sh
