"""Probes during pretraining: every `eval.every` steps, embed each probe task with the frozen
backbone and fit a logistic (or ridge) regression; score zero-shot SNV tasks with the LM head.

The trainer makes one call per step, `ProbeRunner.maybe_run(step, module, log)`; what a probe of
a task is (read once, run each time) is its kind's (evaluation/kinds/). A probe must not
change the training trajectory, so it
  - runs under torch.no_grad() in eval mode and restores the module's train mode,
  - saves and restores every RNG it could touch (torch CPU and CUDA, numpy, python `random`),
  - never touches the optimizer, the data stream or the gradient buffers.
With expert parallelism every forward is a collective (the experts' all-to-all), so every rank
runs the same embedding forwards on the same sequences; only rank 0 fits and logs. Probe data is
a seeded, fixed subsample (`eval.max_examples` rows per split), read once at start, so a probe
costs seconds and every probe of a run sees the same rows.
Metrics go to TensorBoard and metrics.jsonl as `probe/<task>/<metric>` (test split; the regression
strength is chosen on the validation split, which is also logged as `probe/<task>/valid_<metric>`).
"""
from __future__ import annotations

import time
from typing import Any

import torch

from janus_pretrain import rng
from janus_pretrain.config import EvalConfig
from janus_pretrain.evaluation.registry import Task, load_suite


class ProbeRunner:
    def __init__(self, config: EvalConfig, device: torch.device | str = "cpu", is_main: bool = True):
        self.config, self.device, self.is_main = config, torch.device(device), is_main
        self.enabled = bool(config.suite) and config.every > 0
        self.tasks: list[tuple[Task, Any]] = []
        if not self.enabled:
            return
        import sklearn.linear_model  # noqa: F401  (seconds to import: paid at start, not inside the first probe)

        suite = load_suite(config.suite)
        chosen = [suite.task(name) for name in config.tasks] if config.tasks else suite.tasks
        with rng.preserved():  # reading data must not move any RNG either
            for task in chosen:
                self.tasks.append((task, task.kind.probe_data(task, config.max_examples)))

    def maybe_run(self, step: int, module: torch.nn.Module, log) -> dict[str, float] | None:
        """Probe at every `eval.every`-th step; returns the logged values on rank 0 (None otherwise)."""
        if not self.enabled or step % self.config.every != 0:
            return None
        started = time.perf_counter()
        values: dict[str, float] = {}
        was_training = module.training
        with rng.preserved(), torch.no_grad():
            module.eval()
            try:
                for task, data in self.tasks:
                    found = task.kind.probe(task, data, module, self.device, self.is_main)
                    values.update({f"probe/{task.name}/{k}": v for k, v in found.items()})
            finally:
                module.train(was_training)
        if not self.is_main:
            return None
        values["probe/seconds"] = time.perf_counter() - started
        log.probes(step, values)
        return values
