"""Finetune an exported Janus model for sequence classification (pooled states + linear head).

    janus finetune --model EXPORT_DIR --train train.tsv [--valid valid.tsv] [--test test.tsv] --out DIR \
        [--rc-conjoin] [--epochs 10] [--lr 3e-3] [--batch-size 32] [--patience 3] [--freeze-backbone]

TSV files have a header with a sequence column and a label column (any number of classes).
Without --valid, a stratified, seeded --valid-fraction of --train is held out for validation.
Writes DIR/classifier.safetensors + DIR/classifier.json (the best validation state) and
DIR/metrics.json (accuracy, MCC, AUROC for two classes; valid, test, history).
Options map 1:1 onto janus_pretrain.downstream.finetune.FinetuneOptions.
Exit codes: 0 done, 2 bad input (one-line message).
"""
from __future__ import annotations

import sys

from janus_pretrain import cli


@cli.one_line_os_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from janus_pretrain.downstream.finetune import FinetuneOptions

    parser = cli.parser(__doc__, prog)
    parser.add_argument("--model", required=True, help="export directory (janus convert)")
    parser.add_argument("--train", required=True, help="training table (TSV)")
    parser.add_argument("--valid", default=None, help="validation table; default: --valid-fraction of --train")
    parser.add_argument("--test", default=None, help="test table, scored once with the best validation state")
    parser.add_argument("--out", required=True, help="output directory")
    cli.add_dataclass_flags(parser, FinetuneOptions)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch default")
    cli.add_progress(parser)
    args = parser.parse_args(argv)
    if problem := cli.output_problem(args.out):
        return cli.fail(problem)
    import torch
    from tqdm import tqdm

    from janus_pretrain.downstream.finetune import finetune
    from janus_pretrain.downstream.tsv import TableError
    from janus_pretrain.export import ExportError

    if args.threads:
        torch.set_num_threads(args.threads)
    options = cli.dataclass_from_flags(FinetuneOptions, args)
    with tqdm(desc="finetune", unit="step", disable=cli.bar_disable(args.progress)) as bar:
        try:
            finetune(args.model, args.train, args.valid, args.out, args.test, options,
                     log=lambda line: bar.write(line, file=sys.stdout), progress=cli.step_bar(bar))
        except (TableError, ExportError, ValueError) as exc:
            return cli.fail(exc)
    return 0
