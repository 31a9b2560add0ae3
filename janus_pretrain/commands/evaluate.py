"""Evaluate an exported model on a task suite, with baselines in the same run.

    janus evaluate --model EXPORT_DIR --suite configs/eval/bundled.yaml --out DIR \
        [--seeds 3] [--baselines kmer,random] [--only task1,task2] [--threads N]

Per task: the pretrained model, the same architecture randomly initialised (same recipe), and a
k-mer logistic regression (k chosen on validation). Writes DIR/results.json (schema
janus-eval-results-v1) and DIR/results.md: mean and std over seeds, and pretrained - random.
(--tasks is the older spelling of --suite.)
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
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--baselines", default="random,kmer",
                        help="comma-separated subset of random,kmer; empty string for none (default random,kmer)")
    parser.add_argument("--only", default="", help="comma-separated task names to run (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch default")
    cli.add_progress(parser)
    args = parser.parse_args(argv)
    if problem := cli.output_problem(args.out):
        return cli.fail(problem)
    from janus_pretrain.evaluation.harness import MODELS

    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in MODELS[1:]]
    if unknown or args.seeds < 1:
        return cli.fail(f"--baselines takes {','.join(MODELS[1:])} (got {unknown}); --seeds must be >= 1")
    import torch

    from janus_pretrain.config import ConfigError
    from janus_pretrain.downstream.tsv import TableError
    from janus_pretrain.downstream.variants import VariantError
    from janus_pretrain.evaluation.suite_job import evaluate_suite
    from janus_pretrain.evaluation.harness import EvaluationError
    from janus_pretrain.export import ExportError

    if args.threads:
        torch.set_num_threads(args.threads)
    command = cli.command_line(prog, argv)
    try:
        results = evaluate_suite(args.model, args.suite, args.out, args.seeds, baselines,
                                       [t for t in args.only.split(",") if t] or None, args.progress, command)
    except (ConfigError, TableError, VariantError, EvaluationError, ExportError, KeyError) as exc:
        return cli.fail(exc)
    print(f"wrote {Path(args.out) / 'results.json'} and results.md ({len(results['tasks'])} tasks)")
    return 0
