"""`launch/evaluate.py`: evaluate an export on a suite against random init and k-mer baselines."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from janus_pretrain.evaluation.harness import MODELS


def evaluate(model_dir: str | Path, suite_path: str | Path, out_dir: str | Path, seeds: int = 3,
             baselines: list[str] = ("random", "kmer"), tasks: list[str] | None = None, show_progress: bool = True,
             command: str = "") -> dict:
    """Run the suite and write OUT/results.json and OUT/results.md; returns the results dict."""
    from janus_pretrain.evaluation.harness import SuiteRunner, load_model, run_tasks
    from janus_pretrain.evaluation.registry import load_suite
    from janus_pretrain.evaluation.report import build_results, write_results
    from janus_pretrain.export import read_export_config

    suite = load_suite(suite_path)
    chosen = [suite.task(name) for name in tasks] if tasks else suite.tasks
    model = load_model(model_dir)
    models = ["pretrained", *baselines]
    seed_list = list(range(seeds))
    outcome = run_tasks(SuiteRunner(model), chosen, models, seed_list, show_progress)
    info = {"path": str(Path(model_dir).resolve()), "parameters": sum(p.numel() for p in model.parameters()),
            "run": {k: v for k, v in read_export_config(model_dir).get("run", {}).items()
                    if k in ("step", "tokens_seen", "checkpoint", "tag", "config_source")}}
    results = build_results(suite, chosen, outcome, info, seed_list, models, command)
    write_results(results, out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate an exported model on a task suite, with a randomly "
                                     "initialised copy and a k-mer regression as baselines in the same run.")
    parser.add_argument("--model", required=True, help="export directory (launch/convert_checkpoint.py)")
    parser.add_argument("--tasks", required=True, help="suite YAML, e.g. configs/eval/bundled.yaml")
    parser.add_argument("--out", required=True, help="output directory for results.json and results.md")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--baselines", default="random,kmer",
                        help="comma-separated subset of random,kmer; empty string for none (default random,kmer)")
    parser.add_argument("--only", default="", help="comma-separated task names to run (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch default")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in MODELS[1:]]
    if unknown or args.seeds < 1:
        print(f"error: --baselines takes {','.join(MODELS[1:])} (got {unknown}); --seeds must be >= 1",
              file=sys.stderr)
        return 2
    import torch

    from janus_pretrain.config import ConfigError
    from janus_pretrain.downstream.tsv import TableError
    from janus_pretrain.downstream.variants import VariantError
    from janus_pretrain.evaluation.harness import EvaluationError
    from janus_pretrain.export import ExportError

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python launch/evaluate.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        results = evaluate(args.model, args.tasks, args.out, args.seeds, baselines,
                           [t for t in args.only.split(",") if t] or None, not args.no_progress, command)
    except (ConfigError, TableError, VariantError, EvaluationError, ExportError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {Path(args.out) / 'results.json'} and results.md ({len(results['tasks'])} tasks)")
    return 0
