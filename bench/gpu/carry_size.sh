#!/usr/bin/env bash
# What the device call carries (docs/gpu.md): the working tree that travels (tracked files and
# untracked files git does not ignore) plus .gpu-wheels/, against the 64 MiB limit of one call.
#   bash bench/gpu/carry_size.sh      exit 1 when over the limit
set -euo pipefail
cd "$(dirname "$0")/../.."
LIMIT_MIB=64
tree=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null || true; } \
  | awk '{s += $1} END {print s + 0}')
wheels=0
if [[ -d .gpu-wheels ]]; then
  wheels=$(find .gpu-wheels -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  find .gpu-wheels -type f -printf '%s %p\n' | sort -rn | awk '{printf "  %6.1f MiB  %s\n", $1 / 1048576, $2}'
fi
total=$((tree + wheels))
awk -v t="$tree" -v w="$wheels" -v a="$total" -v l="$LIMIT_MIB" 'BEGIN {
  printf "carry: working tree %.1f MiB + .gpu-wheels %.1f MiB = %.1f MiB of %d MiB\n", t / 1048576, w / 1048576, a / 1048576, l }'
if (( total > LIMIT_MIB * 1048576 )); then
  echo "error: the device call would carry over $LIMIT_MIB MiB; drop wheels from .gpu-wheels/ (the biggest are listed above)" >&2
  exit 1
fi
