"""Evaluate an exported model on a task suite, with baselines in the same run.

    janus evaluate --model EXPORT_DIR --suite configs/eval/bundled.yaml --out DIR \
        [--seeds 3] [--baselines kmer,random] [--only task1,task2] [--threads N]
        [--data-root DIR] [--window-bp N] [--max-train N] [--max-test N] [--grid LRxBATCH,...] [--epochs N]

Per task: the pretrained model, the same architecture randomly initialised (same recipe), and a
k-mer logistic regression (k chosen on validation). Writes DIR/results.json (schema
janus-eval-results-v1) and DIR/results.md: mean and std over seeds, and pretrained - random.
The benchmark suites (configs/eval/nt.yaml, gb.yaml, dnalongbench_eqtl.yaml, docs/benchmarks.md) read
the downloaded data under --data-root with the official protocol; the remaining flags scale a run
down (recorded in every task version). (--tasks is the older spelling of --suite.)
Exit codes: 0 done, 2 bad input (one-line message naming the file, line and column or key).
"""
from __future__ import annotations

from pathlib import Path

from janus_pretrain import cli


@cli.one_line_os_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = cli.parser(__doc__, prog)
    parser.add_argument("--model", required=True, help="export directory (janus convert)")
    cli.flag(parser, "--suite", "--tasks", required=True, help="suite YAML, e.g. configs/eval/bundled.yaml")
    parser.add_argument("--out", required=True, help="output directory for results.json and results.md")
    parser.add_argument("--seeds", type=int, default=None,
                        help="run seeds: 0..N-1 (default 3); benchmark suites: the first N official seeds (default all)")
    parser.add_argument("--baselines", default="random,kmer",
                        help="comma-separated subset of random,kmer; empty string for none (default random,kmer)")
    parser.add_argument("--only", default="", help="comma-separated task names to run (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch default")
    parser.add_argument("--data-root", default=None, help="benchmark suites: the downloaded data (default: the suite's data_root)")
    parser.add_argument("--window-bp", type=int, default=0,
                        help="input length: NT/GB max_length, eQTL window, zero-shot context (default: the protocol's)")
    parser.add_argument("--max-train", type=int, default=0, help="at most N training rows, seeded subsample (default all)")
    parser.add_argument("--max-test", type=int, default=0, help="benchmark suites: at most N test rows (default all)")
    parser.add_argument("--grid", default="", help="NT/GB: lr x batch cells to run, e.g. 1e-3x128,2e-3x128 (default: official)")
    parser.add_argument("--epochs", type=int, default=0, help="benchmark suites: finetune epochs (default: the protocol's)")
    cli.add_progress(parser)
    args = parser.parse_args(argv)
    if problem := cli.output_problem(args.out):
        return cli.fail(problem)
    from janus_pretrain.evaluation.harness import MODELS

    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in MODELS[1:]]
    if unknown or (args.seeds is not None and args.seeds < 1):
        return cli.fail(f"--baselines takes {','.join(MODELS[1:])} (got {unknown}); --seeds must be >= 1")
    negative = [flag for flag in ("window_bp", "max_train", "max_test", "epochs") if getattr(args, flag) < 0]
    if negative:
        return cli.fail(f"--{negative[0].replace('_', '-')} must be >= 0")
    try:
        grid = parse_grid(args.grid)
    except ValueError as exc:
        return cli.fail(exc)
    import torch

    from janus_pretrain.config import ConfigError
    from janus_pretrain.downstream.tsv import TableError
    from janus_pretrain.downstream.variants import VariantError
    from janus_pretrain.evaluation.suite_job import evaluate_suite
    from janus_pretrain.evaluation.harness import EvaluationError
    from janus_pretrain.evaluation.registry import Scale
    from janus_pretrain.export import ExportError

    if args.threads:
        torch.set_num_threads(args.threads)
    command = cli.command_line(prog, argv)
    try:
        scale = Scale(args.window_bp, args.max_train, args.max_test, grid, args.epochs)
        results = evaluate_suite(args.model, args.suite, args.out, args.seeds, baselines,
                                 [t for t in args.only.split(",") if t] or None, args.progress, command, args.data_root,
                                 scale)
    except (ConfigError, TableError, VariantError, EvaluationError, ExportError, KeyError) as exc:
        return cli.fail(exc)
    print(f"wrote {Path(args.out) / 'results.json'} and results.md ({len(results['tasks'])} tasks)")
    return 0


def parse_grid(text: str) -> tuple[tuple[float, int], ...]:
    """'1e-3x128,2e-3x256' -> ((0.001, 128), (0.002, 256)); ValueError naming the bad cell."""
    cells = []
    for cell in (c.strip() for c in text.split(",") if c.strip()):
        lr, sep, batch = cell.partition("x")
        try:
            cells.append((float(lr), int(batch)))
        except ValueError:
            raise ValueError(f"--grid: {cell!r} is not LRxBATCH (e.g. 1e-3x128)") from None
        if not sep or cells[-1][0] <= 0 or cells[-1][1] < 1:
            raise ValueError(f"--grid: {cell!r} needs lr > 0 and batch >= 1 (e.g. 1e-3x128)")
    return tuple(cells)
