#!/usr/bin/env python
"""Where finetuning time goes on CPU, and what a frozen-backbone probe costs instead.

    python bench/finetune_cost.py --model EXPORT [--length 200] [--batch-size 32] [--steps 5] [--threads 1]

Times, per optimizer step of full finetuning (random 200 bp sequences, 2 classes): the backbone
forward, the backward pass, the optimizer step, with and without RC conjoining; then the cost of
embedding 3,000 sequences once (what a cached probe pays) and fitting the logistic regression.
Prints seconds and the projection for one epoch over 3,000 sequences.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--n", type=int, default=3000, help="sequences of the projected epoch and of the probe")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    from janus_pretrain.downstream.classification import SequenceClassifier
    from janus_pretrain.evaluation.kinds import KINDS
    from janus_pretrain.evaluation.probes import embed_sequences, fit_probe
    from janus_pretrain.export import load_backbone
    from janus_pretrain.tokenizer import encode

    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    seqs = ["".join(rng.choice("ACGT") for _ in range(args.length)) for _ in range(args.n)]
    labels = np.array([rng.randrange(2) for _ in seqs])
    steps_per_epoch = -(-args.n // args.batch_size)
    print(f"model {args.model}, batch {args.batch_size} x {args.length} bp, {args.threads} thread(s)")
    for rc in (False, True):
        torch.manual_seed(0)
        model = SequenceClassifier(load_backbone(args.model), 2, rc_conjoin=rc).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        parts = np.zeros(3)
        for step in range(args.steps + 1):
            batch = torch.stack([encode(s) for s in seqs[step * args.batch_size:(step + 1) * args.batch_size]])
            t0 = time.perf_counter()
            logits, aux = model(batch)
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels[:len(batch)])) + 0.2 * aux
            t1 = time.perf_counter()
            optimizer.zero_grad()
            loss.backward()
            t2 = time.perf_counter()
            optimizer.step()
            t3 = time.perf_counter()
            if step:  # the first step warms allocator and kernels up
                parts += (t1 - t0, t2 - t1, t3 - t2)
        parts /= args.steps
        total = parts.sum()
        print(f"full finetune{' + RC conjoin' if rc else ''}: {total:.2f} s/step = forward {parts[0]:.2f} + "
              f"backward {parts[1]:.2f} + optimizer {parts[2]:.3f}; one epoch of {args.n}: "
              f"{total * steps_per_epoch / 60:.1f} min")
    backbone = load_backbone(args.model)
    t0 = time.perf_counter()
    feats = embed_sequences(backbone, seqs, 64)
    t1 = time.perf_counter()
    cut = int(0.8 * args.n)
    fit_probe(KINDS["classification"], ["accuracy"], (feats[:cut], labels[:cut]), (feats[cut:], labels[cut:]),
              (feats[cut:], labels[cut:]), [0.01, 0.1, 1.0, 10.0], num_classes=2)
    t2 = time.perf_counter()
    print(f"frozen-backbone probe: embed {args.n} sequences once {t1 - t0:.1f} s, fit 4 logistic regressions "
          f"{t2 - t1:.1f} s (vs {args.n / args.batch_size:.0f} finetune steps per epoch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
