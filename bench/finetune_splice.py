#!/usr/bin/env python
"""Splice-junction benchmark: finetuned Janus model vs a one-hot logistic regression, same run.

    python bench/finetune_splice.py                         # small model, brief pretraining, finetune
    python bench/finetune_splice.py --model EXPORT_DIR      # finetune an existing export
    python bench/finetune_splice.py --pretrain-steps 0      # random init

Data: data/labels/splice_{train,valid,test}.tsv (UCI primate splice junctions, 60 nt, classes
ei / ie / n; the fixed seeded split). Pretraining (when no --model) is a plain in-process loop
(no DeepSpeed) on random crops of the bundled genomes in data/genomes/, to give the backbone
something better than random weights. The baseline is multinomial logistic regression on the
one-hot encoded sequence (60 x 4 features), L2 strength chosen on the validation split, fitted
with torch L-BFGS. Prints both test accuracies and their ratio.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from janus_pretrain.config import ModelConfig  # noqa: E402
from janus_pretrain.downstream.classification import encode_all  # noqa: E402
from janus_pretrain.downstream.finetune import FinetuneOptions, finetune  # noqa: E402
from janus_pretrain.downstream.tsv import encode_labels, read_labelled_tsv  # noqa: E402
from janus_pretrain.export import save_pretrained  # noqa: E402
from janus_pretrain.model import JanusForPretraining  # noqa: E402
from janus_pretrain.tokenizer import A_ID, T_ID, encode  # noqa: E402

LABELS = REPO / "data" / "labels"
GENOMES = REPO / "data" / "genomes"


def one_hot(ids: list[torch.Tensor]) -> torch.Tensor:
    """(N, L*4) one-hot of A/C/G/T; N and other ids are all-zero rows."""
    stacked = torch.stack(ids)  # (N, L)
    is_base = (stacked >= A_ID) & (stacked <= T_ID)
    hot = F.one_hot((stacked - A_ID).clamp(0, 3), 4).float() * is_base[..., None]
    return hot.flatten(1)


def logistic_regression_baseline(train, valid, test, num_classes: int) -> dict:
    """Multinomial logistic regression on one-hot features; L2 chosen on validation accuracy."""
    (xtr, ytr), (xva, yva), (xte, yte) = train, valid, test
    best = None
    for l2 in (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
        torch.manual_seed(0)
        linear = torch.nn.Linear(xtr.shape[1], num_classes)
        optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=500, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(linear(xtr), ytr) + l2 * linear.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            valid_acc = float((linear(xva).argmax(1) == yva).float().mean())
            test_acc = float((linear(xte).argmax(1) == yte).float().mean())
        if best is None or valid_acc > best["valid_accuracy"]:
            best = {"l2": l2, "valid_accuracy": valid_acc, "test_accuracy": test_acc}
    return best


def genome_crops(seq_len: int, seed: int):
    """Endless random crops (ids) from the bundled genomes, each genome equally likely."""
    genomes = []
    for path in sorted(GENOMES.glob("*.f*a.gz")):
        text = gzip.decompress(path.read_bytes()).decode()
        seq = "".join(line for line in text.splitlines() if not line.startswith(">"))
        genomes.append(encode(seq))
    rng = random.Random(seed)
    while True:
        genome = rng.choice(genomes)
        start = rng.randrange(0, len(genome) - seq_len)
        yield genome[start:start + seq_len]


def pretrain(model: JanusForPretraining, steps: int, seq_len: int, batch: int, lr: float, seed: int) -> list[float]:
    """Plain AdamW loop on genome crops (the Janus all-position CE); returns the losses."""
    crops = genome_crops(seq_len, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    losses = []
    model.train()
    for step in range(steps):
        ids = torch.stack([next(crops) for _ in range(batch)])
        out = model(ids, labels=ids)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(out.ce_loss.detach()))
        if (step + 1) % max(1, steps // 10) == 0:
            print(f"pretrain step {step + 1}/{steps}: ce {sum(losses[-10:]) / len(losses[-10:]):.4f}", flush=True)
    return losses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="export directory to finetune (skips pretraining)")
    parser.add_argument("--out", default="runs/bench_splice", help="working directory")
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--pretrain-seq-len", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=4, help="epochs without validation gain before stopping")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout on the pooled state")
    parser.add_argument("--rc-conjoin", action="store_true")
    parser.add_argument("--pooling", choices=("mean", "flatten"), default="mean",
                        help="mean: the reference head; flatten: concatenated position states (position-aware)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    tables = {name: read_labelled_tsv(LABELS / f"splice_{name}.tsv") for name in ("train", "valid", "test")}
    classes = sorted(set(tables["train"].labels))
    data = {name: (one_hot(encode_all(t.sequences)), torch.tensor(encode_labels(t, classes))) for name, t in tables.items()}
    baseline = logistic_regression_baseline(data["train"], data["valid"], data["test"], len(classes))
    majority = max(data["test"][1].bincount()).item() / len(data["test"][1])
    print(f"one-hot logistic regression: test accuracy {baseline['test_accuracy']:.4f} "
          f"(valid {baseline['valid_accuracy']:.4f}, l2 {baseline['l2']}); majority class {majority:.4f}", flush=True)

    model_dir = args.model
    if model_dir is None:
        torch.manual_seed(args.seed)
        # Mamba layer 0, attention + MoE at layer 1, fusion: a scaled-down JanusDNA
        config = ModelConfig(d_model=args.d_model, n_layers=args.n_layers, attn_layer_period=2, attn_layer_offset=1,
                             expert_layer_period=2, expert_layer_offset=1, num_experts=4, top_k=2, n_heads=4,
                             d_state=8, kernels="reference", scan_chunk=32)
        model = JanusForPretraining(config)
        losses = pretrain(model, args.pretrain_steps, args.pretrain_seq_len, 8, 4e-3, args.seed) \
            if args.pretrain_steps else []
        model_dir = save_pretrained(model, out / "export", {"pretrain_steps": args.pretrain_steps,
                                                            "pretrain_final_ce": losses[-1] if losses else None},
                                    overwrite=True)
    options = FinetuneOptions(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, patience=args.patience,
                              rc_conjoin=args.rc_conjoin, seed=args.seed, pooling=args.pooling,
                              dropout=args.dropout)
    result = finetune(model_dir, LABELS / "splice_train.tsv", LABELS / "splice_valid.tsv", out / "finetuned",
                      LABELS / "splice_test.tsv", options)
    tuned = result["test"]["accuracy"]
    summary = {"finetuned_test_accuracy": tuned, "finetuned_test_mcc": result["test"]["mcc"],
               "baseline_test_accuracy": baseline["test_accuracy"], "ratio": tuned / baseline["test_accuracy"],
               "majority": majority, "seconds": round(time.time() - started, 1), "model": str(model_dir),
               "args": vars(args)}
    (out / "bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"splice test accuracy: finetuned Janus ({args.pooling} pooling) {tuned:.4f} vs one-hot logistic regression "
          f"{baseline['test_accuracy']:.4f} (ratio {summary['ratio']:.3f}; majority {majority:.4f}; "
          f"{summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
