"""results.json (one stable schema) and results.md (the same numbers as tables).

results.json, schema RESULTS_SCHEMA:
  {"schema", "created", "command", "package_version",
   "model": {"path", "parameters", "run": export run summary},
   "suite": {"name", "path", "sha256"}, "seeds": [...], "models": [...], "published": figures file or null,
   "tasks": {name: {"version", "kind", "description", "metrics", "recipe", "files": {role: {"path", "sha256"}},
                    "data": {"train", "valid", "test", "folds"}, "classes",
                    "runs": [{"model", "seed" (null = deterministic), "fold", "seconds", "valid", "test", "chosen"}],
                    "summary": {model: {metric: {"mean", "std", "n"}}},
                    "difference": {"pretrained-random": {metric: {"mean", "std", "n"}}},
                    "not_applicable": {model: reason},
                    "seeds", "protocol" (how a benchmark kind ran it), "published": [{"model", "label", "metric",
                    "mean", "spread", "spread_kind", "source"}], and what the kind adds: "grid" and "grid_runs" (NT/GB cells),
                    "heads" and "head_runs" (eQTL heads)}}}
Test metrics are averaged over folds within a seed, then mean and sample standard deviation
(ddof 1; 0 for a single value) are taken over seeds. The difference pairs seeds: pretrained
seed s minus random seed s (a deterministic pretrained probe is paired with every random seed).
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from janus_pretrain.atomic_io import atomic_write_text
from janus_pretrain.digests import file_digest
from janus_pretrain.evaluation.benchmarks.published import figure_text
from janus_pretrain.evaluation.registry import Suite, Task

RESULTS_SCHEMA = "janus-eval-results-v1"
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0,
            "n": len(finite)}


def per_seed(runs: list[dict], model: str, metric: str) -> dict:
    """{seed: test metric averaged over folds} for one model."""
    by_seed: dict = defaultdict(list)
    for run in runs:
        if run["model"] == model and metric in run["test"]:
            by_seed[run["seed"]].append(run["test"][metric])
    return {seed: float(np.nanmean(v)) if not all(math.isnan(x) for x in v) else float("nan")
            for seed, v in by_seed.items()}


def summarise(task: Task, entry: dict, models: list[str]) -> dict:
    summary = {m: {metric: _stats(list(per_seed(entry["runs"], m, metric).values())) for metric in task.metrics}
               for m in models if m not in entry["not_applicable"]}
    difference = {}
    if "pretrained" in summary and "random" in summary:
        diffs = {}
        for metric in task.metrics:
            pre, rnd = per_seed(entry["runs"], "pretrained", metric), per_seed(entry["runs"], "random", metric)
            pairs = [pre[s] - rnd[s] for s in rnd if s in pre] if None not in pre else \
                [pre[None] - v for v in rnd.values()]
            diffs[metric] = _stats(pairs)
        difference["pretrained-random"] = diffs
    return {"summary": summary, "difference": difference}


def build_results(suite: Suite, tasks: list[Task], outcome: dict[str, dict], model_info: dict, seeds: list[int],
                  models: list[str], command: str) -> dict:
    from datetime import datetime, timezone

    import janus_pretrain

    out = {"schema": RESULTS_SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": command, "package_version": getattr(janus_pretrain, "__version__", "unknown"),
           "model": model_info, "suite": {"name": suite.name, "path": str(suite.path), "sha256": file_digest(suite.path)},
           "seeds": seeds, "models": models, "tasks": {},
           "published": str(suite.published.path) if suite.published else None}
    for task in tasks:
        entry = outcome[task.name]
        out["tasks"][task.name] = {
            "version": task.version, "kind": task.kind.name, "description": task.spec.description,
            "metrics": task.metrics, "recipe": dataclasses.asdict(task.recipe),
            "files": {role: {"path": str(path), "sha256": file_digest(path)} for role, path in task.files.items()},
            "protocol": task.kind.protocol_line(task),
            "published": [{"model": f.model, "label": f.label, "metric": f.metric, "mean": f.mean, "spread": f.spread,
                           "spread_kind": f.spread_kind, "source": f.source} for f in (suite.published.figures(task.name) if suite.published else [])],
            **entry, **summarise(task, entry, models)}
    return out


def _cell(stat: dict | None, signed: bool = False) -> str:
    if not stat or stat["mean"] is None:
        return "n/a"
    text = f"{stat['mean']:+.3f}" if signed else f"{stat['mean']:.3f}"
    return text + (f" ± {stat['std']:.3f}" if stat["n"] > 1 else "") + f" (n={stat['n']})"


def render_markdown(results: dict) -> str:
    lines = [f"# Evaluation: suite {results['suite']['name']}", "",
             f"- model: `{results['model']['path']}` ({results['model'].get('parameters', '?'):,} parameters)",
             f"- seeds: {results['seeds']}; created {results['created']}",
             f"- command: `{results['command']}`", "",
             "Test metrics, mean ± sample std over seeds (n = seeds; a deterministic model, such as a probe on "
             "fixed embeddings or the k-mer regression, has n=1). `pretrained - random` pairs seeds.", ""]
    lines += published_table(results)
    for name, task in results["tasks"].items():
        recipe = task["recipe"]
        lines += [f"## {name} ({task['kind']}, {task['version']})", ""]
        if task["description"]:
            lines += [task["description"], ""]
        data = task["data"]
        if task.get("protocol"):
            lines += [task["protocol"], ""]
        if data and not task.get("protocol"):
            lines.append(f"train {data['train']}, valid {data['valid']}, test {data['test']}"
                         + (f", {data['folds']} folds" if data.get("folds", 1) > 1 else "")
                         + f"; head {recipe['head']}" + (f", lr {recipe['lr']}, epochs {recipe['epochs']}"
                                                          if recipe["head"] == "finetune" else "")
                         + (", RC conjoined" if recipe["rc_conjoin"] else ""))
            lines.append("")
        metrics = task["metrics"]
        lines += ["| model | " + " | ".join(metrics) + " |", "| --- |" + " --- |" * len(metrics)]
        for model, stats in task["summary"].items():
            lines.append(f"| {model} | " + " | ".join(_cell(stats[m]) for m in metrics) + " |")
        for label, stats in task["difference"].items():
            lines.append(f"| **{label}** | " + " | ".join(_cell(stats[m], signed=True) for m in metrics) + " |")
        for model, reason in task["not_applicable"].items():
            lines.append(f"| {model} | not applicable: {reason} |" + " |" * (len(metrics) - 1))
        lines.append("")
        lines += _extra_tables(task)
    return "\n".join(lines)


def _extra_tables(task: dict) -> list[str]:
    """The chosen grid cell (NT/GB) and the two eQTL heads side by side, when the kind wrote them."""
    lines = []
    for model, grid in task.get("grid", {}).items():
        cells = "; ".join(f"lr {c['lr']:g} batch {c['batch_size']}: {c['valid_mean']:.3f}" for c in grid["cells"])
        lines.append(f"- {model}: cell lr {grid['cell']['lr']:g}, batch {grid['cell']['batch_size']} chosen on "
                     f"{grid['selected_by']} (mean over seeds per cell: {cells})")
    if task.get("heads"):
        lines += ["| model | alt head (official) | alt-ref difference head | difference - alt (paired by seed) |",
                  "| --- | --- | --- | --- |"]
        for model, heads in task["heads"].items():
            lines.append(f"| {model} | " + " | ".join(_mean_std(heads[h]) for h in
                                                     ("alt", "alt_ref_difference", "difference_minus_alt")) + " |")
    return lines + [""] if lines else []


def _mean_std(stat: dict) -> str:
    if stat["mean"] is None or not math.isfinite(stat["mean"]):
        return "n/a"
    return f"{stat['mean']:.3f}" + (f" ± {stat['std']:.3f}" if stat["n"] > 1 else "") + f" (n={stat['n']})"


def published_table(results: dict) -> list[str]:
    """Each task's result beside its published figures and the same run's baselines (test metric of the
    published table; our mean ± std over seeds)."""
    if not results.get("published"):
        return []
    tasks = results["tasks"]
    labels = list(dict.fromkeys(f["label"] for task in tasks.values() for f in task["published"]))
    baselines = [m for m in results["models"] if m != "pretrained"]
    head = ["task", "metric", "pretrained", *baselines, *(f"published: {label}" for label in labels)]
    lines = ["## Beside the published figures", "",
             "Ours: test metric over the whole test split, mean ± std over seeds (the official logs average "
             "per-batch values: `test_batch_mean` in results.json). Published: the source named in each row's file; "
             "'(range r)' is their max - min over seeds (the JanusDNA paper's error bars), '± s' a std.",
             "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, task in tasks.items():
        metric = task["published"][0]["metric"] if task["published"] else task["metrics"][0]
        ours = [_cell(task["summary"].get(m, {}).get(metric)) for m in ["pretrained", *baselines]]
        figures = {f["label"]: f for f in task["published"]}
        theirs = [figure_text(figures[label]["mean"], figures[label]["spread"], figures[label]["spread_kind"])
                  if label in figures else "-" for label in labels]
        lines.append(f"| {name} | {metric} | " + " | ".join(ours + theirs) + " |")
    return lines + [""]


def write_results(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / RESULTS_JSON, out_dir / RESULTS_MD
    atomic_write_text(json_path, json.dumps(_finite(results), indent=2, sort_keys=True, allow_nan=False,
                                            default=_json_default) + "\n")
    atomic_write_text(md_path, render_markdown(results) + "\n")
    return json_path, md_path


def _finite(value):
    """NaN/inf (an undefined metric, e.g. AUROC with one class present) -> null: strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
