#!/usr/bin/env python
"""Finetune an exported Janus model for sequence classification (mean-pooled states + linear head).

    python launch/finetune.py --model EXPORT_DIR --train train.tsv [--valid valid.tsv] \
        [--test test.tsv] --out DIR [--rc-conjoin] [--epochs 10] [--lr 3e-3] [--freeze-backbone]

TSV files have a header with a sequence column and a label column (any number of classes).
Writes DIR/classifier.safetensors + DIR/classifier.json (the best validation state) and
DIR/metrics.json (accuracy, MCC, AUROC for two classes; valid, test, history).
Exit codes: 0 done, 2 bad input (one-line message).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

from janus_pretrain import cli  # noqa: E402
from janus_pretrain.downstream.finetune import FinetuneOptions  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--model", required=True, help="export directory (launch/convert_checkpoint.py)")
    parser.add_argument("--train", required=True)
    parser.add_argument("--valid", default=None, help="validation table; default: --valid-fraction of --train, "
                        "stratified and seeded (--seed)")
    parser.add_argument("--test", default=None)
    parser.add_argument("--out", required=True, help="output directory")
    defaults = FinetuneOptions()
    for field in dataclasses.fields(FinetuneOptions):
        flag = "--" + field.name.replace("_", "-")
        value = getattr(defaults, field.name)
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true", default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch default")
    args = parser.parse_args(argv)
    import torch

    from janus_pretrain.downstream.finetune import finetune
    from janus_pretrain.downstream.tsv import TableError
    from janus_pretrain.export import ExportError

    if args.threads:
        torch.set_num_threads(args.threads)
    options = FinetuneOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneOptions)})
    try:
        finetune(args.model, args.train, args.valid, args.out, args.test, options)
    except (TableError, ExportError, ValueError) as exc:
        return cli.fail(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
