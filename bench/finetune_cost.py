#!/usr/bin/env python
"""Where finetuning time goes, what a frozen-backbone probe costs instead, and what a full benchmark
suite would cost at the measured rate.

    python bench/finetune_cost.py --model EXPORT [--length 200] [--batch-size 32] [--steps 5] [--threads 1]
    python bench/finetune_cost.py --config configs/1k.yaml --length 500 --batch-size 8 --suite nt,gb,dnalongbench_eqtl

Times, per optimizer step of full finetuning (random sequences of --length bp, 2 classes): the
backbone forward, the backward pass, the optimizer step, with and without RC conjoining; then the
cost of embedding --n sequences once (what a cached probe pays) and fitting the logistic regression.
Prints seconds and the projection for one epoch over --n sequences. --config times a random
initialisation of a run config's model instead of an export (the cost does not depend on the
weights); --device cuda times on a GPU.

--suite projects the full official protocol of each named suite (evaluation/benchmarks/official.py:
every task, grid cell and seed, for the pretrained model and the random-init twin `janus evaluate`
runs beside it) from the measured cost per token: training tokens at the fwd+bwd+optimizer rate of
the run without conjoining (the protocol trains one random strand), validation every epoch on both
strands at the forward rate. Test passes (once per run) are left out. The per-token rate is taken
at --length and --batch-size and applied to every task's length: a projection, not a measurement,
and for the 450 kbp eQTL windows a lower bound (the attention pieces grow faster than linearly).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUITES = ("nt", "gb", "dnalongbench_eqtl")
# DNALongBench's own count of eQTL records, all nine tissues and subsets together (Cheng et al., Nat.
# Commun. 2025, Table 2: 31,282 samples, 450,000 bp input); the per-subset split is in the data only.
EQTL_RECORDS = 31_282


@dataclass(frozen=True)
class SuiteWork:
    """The finetuning work of one full suite under its official protocol."""
    suite: str
    runs: int  # finetune runs (task x cell x seed x model; eQTL: x head)
    train_tokens: float  # bases through forward + backward
    forward_tokens: float  # bases through forward only (validation, both strands)


def suite_work(suite: str, models: int = 2, eqtl_records: int = EQTL_RECORDS) -> SuiteWork:
    """Counted from official.py; `models` 2 = the pretrained model and its random-init twin."""
    from janus_pretrain.evaluation.benchmarks import official
    from janus_pretrain.evaluation.benchmarks.protocol import validation_split

    if suite == "dnalongbench_eqtl":
        p = official.EQTL_PROTOCOL
        # heads: alt (one window) and the ref-vs-alt difference head (two windows); every record
        # counted as training (the train share of the 31,282 is not published): an upper bound
        windows_per_record = 1 + 2
        runs = len(official.EQTL_TISSUES) * 2 * models
        train = eqtl_records * windows_per_record * p.window * p.epochs * models
        return SuiteWork(suite, runs, float(train), 0.0)
    tasks, protocol = (official.NT_TASKS, official.NT_PROTOCOL) if suite == "nt" else (official.GB_TASKS,
                                                                                      official.GB_PROTOCOL)
    per_task_runs = len(protocol.lrs) * len(protocol.batch_sizes) * len(protocol.seeds) * models
    train = forward = 0.0
    for task in tasks:
        split = validation_split(protocol.split_rule, task.train_rows, protocol.seeds[0], protocol.valid_fraction)
        n_valid = len(split.valid)
        train += per_task_runs * protocol.max_epochs * (task.train_rows - n_valid) * task.max_length
        forward += per_task_runs * protocol.max_epochs * n_valid * 2 * task.max_length
    return SuiteWork(suite, per_task_runs * len(tasks), train, forward)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="an export directory")
    source.add_argument("--config", help="a run config: time a random initialisation of its model section")
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--n", type=int, default=3000, help="sequences of the projected epoch and of the probe (0: neither)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--suite", default="", help=f"comma-separated subset of {','.join(SUITES)}: project each "
                                                    "full suite from the measured cost per token")
    parser.add_argument("--eqtl-records", type=int, default=EQTL_RECORDS,
                        help="DNALongBench eQTL records of the projection (default: its published count, all tissues)")
    args = parser.parse_args(argv)
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    if unknown := [s for s in suites if s not in SUITES]:
        parser.error(f"--suite takes {','.join(SUITES)} (got {unknown})")
    import numpy as np
    import torch

    from janus_pretrain.config import load_config
    from janus_pretrain.downstream.classification import SequenceClassifier
    from janus_pretrain.evaluation.kinds import KINDS
    from janus_pretrain.evaluation.probes import embed_sequences, fit_probe
    from janus_pretrain.export import load_backbone
    from janus_pretrain.model import JanusForPretraining
    from janus_pretrain.tokenizer import encode

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def backbone():
        if args.model:
            return load_backbone(args.model, device)
        torch.manual_seed(0)
        return JanusForPretraining(load_config(args.config).model).backbone.to(device)

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    rng = random.Random(0)
    seqs = ["".join(rng.choice("ACGT") for _ in range(args.length)) for _ in range(max(args.n, args.batch_size))]
    labels = np.array([rng.randrange(2) for _ in seqs])
    steps_per_epoch = -(-args.n // args.batch_size)
    tokens_per_step = args.batch_size * args.length
    print(f"model {args.model or args.config}, batch {args.batch_size} x {args.length} bp, {args.threads} thread(s), "
          f"{device}")
    rates = {}
    for rc in (False, True):
        torch.manual_seed(0)
        model = SequenceClassifier(backbone(), 2, rc_conjoin=rc).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        parts = np.zeros(3)
        for step in range(args.steps + 1):
            rows = [(step * args.batch_size + i) % len(seqs) for i in range(args.batch_size)]
            batch = torch.stack([encode(seqs[i]) for i in rows]).to(device)
            target = torch.from_numpy(labels[rows]).to(device)
            t0 = clock()
            logits, aux = model(batch)
            loss = torch.nn.functional.cross_entropy(logits, target) + 0.2 * aux
            t1 = clock()
            optimizer.zero_grad()
            loss.backward()
            t2 = clock()
            optimizer.step()
            t3 = clock()
            if step:  # the first step warms allocator and kernels up
                parts += (t1 - t0, t2 - t1, t3 - t2)
        parts /= args.steps
        total = parts.sum()
        if not rc:
            rates = {"train": total / tokens_per_step, "forward": parts[0] / tokens_per_step}
        epoch = f"; one epoch of {args.n}: {total * steps_per_epoch / 60:.1f} min" if args.n else ""
        print(f"full finetune{' + RC conjoin' if rc else ''}: {total:.2f} s/step = forward {parts[0]:.2f} + "
              f"backward {parts[1]:.2f} + optimizer {parts[2]:.3f}{epoch}")
    if args.n:
        model = backbone()
        t0 = clock()
        feats = embed_sequences(model, seqs[:args.n], 64)
        t1 = clock()
        cut = int(0.8 * args.n)
        fit_probe(KINDS["classification"], ["accuracy"], (feats[:cut], labels[:cut]), (feats[cut:], labels[cut:]),
                  (feats[cut:], labels[cut:]), [0.01, 0.1, 1.0, 10.0], num_classes=2)
        t2 = clock()
        print(f"frozen-backbone probe: embed {args.n} sequences once {t1 - t0:.1f} s, fit 4 logistic regressions "
              f"{t2 - t1:.1f} s (vs {args.n / args.batch_size:.0f} finetune steps per epoch)")
    for suite in suites:
        work = suite_work(suite, eqtl_records=args.eqtl_records)
        hours = (work.train_tokens * rates["train"] + work.forward_tokens * rates["forward"]) / 3600
        print(f"projected full {suite}: {work.runs} finetune runs, {work.train_tokens:.3g} training + "
              f"{work.forward_tokens:.3g} validation bases: {hours:,.0f} h on this {device} at "
              f"{1 / rates['train']:,.0f} training bases/s (one device, runs back to back)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
