#!/usr/bin/env bash
# The main job, on a laptop: shard the bundled real genomes (once), then pretrain configs/tiny.yaml
# on 2 CPU ranks with DeepSpeed ZeRO-2 and expert parallelism 2 (a few minutes on 2 cores).
#
#   make demo                      # sets up .venv first, then runs this script
#   bash launch/demo.sh [--set key=value ...] [--resume auto]
#
# Extra arguments go to launch/pretrain.py; by default the demo starts fresh (--resume none).
# On a GPU machine the same command runs on 2 GPUs (--num_accelerators is --num_gpus).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=runs/demo
SHARDS=$RUN/shards
if [ ! -f "$SHARDS/manifest.json" ]; then
    echo "sharding the bundled genomes (configs/genomes/bundled.yaml) into $SHARDS"
    python data_prep/shard_genomes.py --genomes configs/genomes/bundled.yaml --out "$SHARDS" --window-bp 4096
fi

# DeepSpeed JIT-builds its CPU communication op once (30-50 s) and caches it here
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}
# one thread per rank: the deepspeed launcher does not set it, and 2 ranks x 2 threads on
# 2 cores run many times slower
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

deepspeed --num_accelerators 2 launch/pretrain.py --config configs/tiny.yaml --resume none "$@"

echo
echo "TensorBoard logs: $RUN/tensorboard   (tensorboard --logdir $RUN/tensorboard)"
echo "checkpoints:      $RUN/checkpoints   (latest -> $(cat $RUN/checkpoints/latest 2>/dev/null || echo none))"
echo "per-step metrics: $RUN/metrics.jsonl"
