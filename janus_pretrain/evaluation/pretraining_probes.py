"""Probes during pretraining: every `eval.every` steps, embed each probe task with the frozen
backbone and fit a logistic (or ridge) regression; score zero-shot SNV tasks with the LM head.

The trainer makes one call per step, `ProbeRunner.maybe_run(step, module, log)`. A probe must not
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

import random
import time

import numpy as np
import torch

from janus_pretrain import rng
from janus_pretrain.config import EvalConfig
from janus_pretrain.evaluation.harness import load_task_data
from janus_pretrain.evaluation.probes import embed_sequences, fit_probe
from janus_pretrain.evaluation.readers import read_snv_task
from janus_pretrain.evaluation.registry import Task, load_suite


def _cap(pair: tuple[list[str], np.ndarray], limit: int, seed: int) -> tuple[list[str], np.ndarray]:
    sequences, targets = pair
    if not limit or len(sequences) <= limit:
        return pair
    rows = sorted(random.Random(seed).sample(range(len(sequences)), limit))
    return [sequences[i] for i in rows], targets[rows]


class ProbeRunner:
    def __init__(self, config: EvalConfig, device: torch.device | str = "cpu", is_main: bool = True):
        self.config, self.device, self.is_main = config, torch.device(device), is_main
        self.enabled = bool(config.suite) and config.every > 0
        self.tasks: list[tuple[Task, dict]] = []
        if not self.enabled:
            return
        import sklearn.linear_model  # noqa: F401  (seconds to import: paid at start, not inside the first probe)

        suite = load_suite(config.suite)
        chosen = [suite.task(name) for name in config.tasks] if config.tasks else suite.tasks
        with rng.preserved():  # reading data must not move any RNG either
            for task in chosen:
                self.tasks.append((task, self._data(task)))

    def _data(self, task: Task) -> dict:
        if task.kind == "zero_shot_snv":
            variants, labels = read_snv_task(task.files["variants"], task.spec.label_column)
            return {"variants": variants, "labels": labels}
        data = load_task_data(task)
        fold = data.folds[0]  # one fold: a probe tracks a trend, the suite run gives the full number
        limit, seed = self.config.max_examples, task.spec.split.seed
        return {"classes": data.classes, **{split: _cap(getattr(fold, split), limit, seed)
                                            for split in ("train", "valid", "test")}}

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
                    values.update(self._run_task(task, data, module))
            finally:
                module.train(was_training)
        if not self.is_main:
            return None
        values["probe/seconds"] = time.perf_counter() - started
        log.probes(step, values)
        return values

    def _run_task(self, task: Task, data: dict, module: torch.nn.Module) -> dict[str, float]:
        prefix = f"probe/{task.name}"
        if task.kind == "zero_shot_snv":
            if getattr(module.config, "objective", "janus") != "janus":
                return {}  # defined for the janus read-out only (score_variants refuses mlm/clm): no probe value
            from janus_pretrain.downstream.task_metrics import compute_metrics
            from janus_pretrain.downstream.variants import score_variants

            rows = score_variants(module, task.files["fasta"], data["variants"], task.recipe.window,
                                  task.recipe.batch_size, self.device, on_ref_mismatch="error")
            score = -np.array([r["score"] for r in rows])  # label 1 = deleterious = low log P(alt) - log P(ref)
            return {f"{prefix}/{k}": v for k, v in compute_metrics(task.metrics, score, data["labels"]).items()}
        backbone = module.backbone
        feats = {split: (embed_sequences(backbone, data[split][0], task.recipe.batch_size, task.recipe.rc_conjoin,
                                         self.device), data[split][1]) for split in ("train", "valid", "test")}
        if not self.is_main:
            return {}
        result = fit_probe(task.kind, task.metrics, feats["train"], feats["valid"], feats["test"], task.recipe.probe_c,
                           0, len(data["classes"]))
        out = {f"{prefix}/{k}": v for k, v in result.test.items()}
        out.update({f"{prefix}/valid_{k}": v for k, v in result.valid.items()})
        return out

