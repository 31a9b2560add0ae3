"""Run a suite: every task for the pretrained model and, in the same run, the baselines.

Models compared on identical splits with the identical recipe:
  pretrained  the export's weights
  random      the same architecture, randomly initialised with the run seed (what pretraining
              has to beat: same capacity, same head, same optimisation, no pretraining)
  kmer        k-mer frequencies + logistic/ridge regression, k and L2 chosen on validation
              (classification and regression only; zero-shot tasks have no k-mer analogue,
              which results.json states instead of leaving the entry out)

A probe (frozen backbone, cached embeddings) and the k-mer model are deterministic given the data:
they run once per fold and are recorded with their seed as null; seeds matter for random init and
for full finetuning. A task that cannot run is an error naming the task, never skipped. What a task's kind means for
each model (how it is read, run and scored) is the kind's (evaluation/kinds/).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from janus_pretrain.cli import bar_disable
from janus_pretrain.evaluation.kinds import EvaluationError  # noqa: F401  (re-exported: the commands catch it)
from janus_pretrain.evaluation.kinds.base import TaskData
from janus_pretrain.evaluation.registry import Task
from janus_pretrain.model import JanusForPretraining

MODELS = ("pretrained", "random", "kmer")


class SuiteRunner:
    """Holds the pretrained model once; builds random-init copies per seed; caches embeddings."""

    def __init__(self, pretrained: JanusForPretraining, threads_note: str = "", log=print):
        self.pretrained, self.log = pretrained.eval(), log
        self.config = pretrained.config
        self._cache: dict[tuple, np.ndarray] = {}
        self.threads_note = threads_note

    def model_for(self, name: str, seed: int | None) -> JanusForPretraining:
        if name == "pretrained":
            return self.pretrained
        torch.manual_seed(seed)
        return JanusForPretraining(self.config).eval()

    def cached(self, key: tuple, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def run_unit(self, task: Task, data: TaskData, model_name: str, seed: int | None, bar=None) -> list[dict]:
        """One (task, model, seed) unit: a list of per-fold records (the task's kind runs it)."""
        started = time.time()
        records = task.kind.run(self, task, data, model_name, seed, bar)
        seconds = round(time.time() - started, 2)
        return [{"model": model_name, "seed": seed, "fold": k, "seconds": seconds, **r} for k, r in enumerate(records)]


def plan_units(task: Task, models: list[str], seeds: list[int]) -> tuple[list[tuple[str, int | None]], dict[str, str]]:
    """(model, seed) pairs to run, and {model: reason} for models that do not apply to the task."""
    units, not_applicable = [], {}
    for name in models:
        reason = task.kind.not_applicable(name)
        if reason:
            not_applicable[name] = reason
            continue
        units += [(name, None)] if task.kind.deterministic(name, task.recipe) else [(name, s) for s in seeds]
    return units, not_applicable


def run_tasks(runner: SuiteRunner, tasks: list[Task], models: list[str], seeds: list[int] | int | None,
              show_progress: bool | None = None) -> dict[str, dict]:
    """{task name: {"data": counts, "seeds", "runs": [...], "not_applicable": {...}, and what the kind's
    finalise adds}}; seeds: these seeds for every task, or a count (None: default) each task's kind
    turns into its seeds (a benchmark's official ones). Progress bars for task/model/seed units and,
    inside full finetuning, for optimizer steps (show_progress None: only on a terminal)."""
    task_seeds = {t.name: list(seeds) if isinstance(seeds, (list, tuple)) else t.kind.run_seeds(t, seeds) for t in tasks}
    plans = {t.name: plan_units(t, models, task_seeds[t.name]) for t in tasks}
    disable = bar_disable(show_progress)
    outer = tqdm(total=sum(len(u) for u, _ in plans.values()), desc="evaluate", unit="run", disable=disable)
    inner = tqdm(total=0, desc="  steps", unit="step", leave=False, disable=disable)
    results = {}
    try:
        for task in tasks:
            data = task.kind.load(task)
            units, not_applicable = plans[task.name]
            runs = []
            for model_name, seed in units:
                outer.set_description(f"{task.name} {model_name} seed {seed if seed is not None else '-'}")
                inner.reset()
                runs += runner.run_unit(task, data, model_name, seed, inner)
                outer.update(1)
            runs, extra = task.kind.finalise(task, runs)
            results[task.name] = {"data": data.counts, "classes": data.classes, "seeds": task_seeds[task.name],
                                  "runs": runs, "not_applicable": not_applicable, **extra}
    finally:
        inner.close()
        outer.close()
    return results


def load_model(export_dir: str | Path) -> JanusForPretraining:
    from janus_pretrain.export import load_pretrained

    return load_pretrained(export_dir)
