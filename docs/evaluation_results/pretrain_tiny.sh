set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions} OMP_NUM_THREADS=1 PATH=$PWD/.venv/bin:$PATH
[ -f runs/demo/shards/manifest.json ] || python data_prep/shard_genomes.py --genomes configs/genomes/bundled.yaml --out runs/demo/shards --window-bp 4096
start=$(date +%s)
deepspeed --num_accelerators 2 --master_port 29731 launch/pretrain.py --config configs/tiny.yaml --resume none \
  --set train.steps=600 --set checkpoint.every=100 --set checkpoint.keep=10 --set train.eval_every=100 --set eval.every=0 \
  --set checkpoint.dir=runs/measure/tiny/checkpoints --set logging.dir=runs/measure/tiny/tensorboard
echo "wall_s=$(( $(date +%s) - start ))"
