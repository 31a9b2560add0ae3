"""The job behind `janus evaluate` (janus_pretrain/commands/evaluate.py): an export on a suite against
random init and k-mer baselines."""
from __future__ import annotations

from pathlib import Path


def evaluate_suite(model_dir: str | Path, suite_path: str | Path, out_dir: str | Path, seeds: int | None = None,
                   baselines: list[str] = ("random", "kmer"), tasks: list[str] | None = None,
                   show_progress: bool | None = None, command: str = "", data_root: str | Path | None = None,
                   scale=None) -> dict:
    """Run the suite and write OUT/results.json and OUT/results.md; returns the results dict.
    seeds: how many run seeds (None: each kind's default, 3 or a benchmark's official seeds);
    data_root and scale (registry.Scale): see load_suite."""
    from janus_pretrain.evaluation.harness import SuiteRunner, load_model, run_tasks
    from janus_pretrain.evaluation.registry import load_suite
    from janus_pretrain.evaluation.report import build_results, write_results
    from janus_pretrain.export import read_export_config

    suite = load_suite(suite_path, tasks, data_root, scale)
    chosen = [suite.task(name) for name in tasks] if tasks else suite.tasks
    model = load_model(model_dir)
    models = ["pretrained", *baselines]
    outcome = run_tasks(SuiteRunner(model), chosen, models, seeds, show_progress)
    seed_list = sorted({s for entry in outcome.values() for s in entry["seeds"]})
    info = {"path": str(Path(model_dir).resolve()), "parameters": sum(p.numel() for p in model.parameters()),
            "run": {k: v for k, v in read_export_config(model_dir).get("run", {}).items()
                    if k in ("step", "tokens_seen", "checkpoint", "tag", "config_source")}}
    results = build_results(suite, chosen, outcome, info, seed_list, models, command)
    write_results(results, out_dir)
    return results
