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
for full finetuning. A task that cannot run is an error naming the task, never skipped.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from janus_pretrain.cli import bar_disable, step_bar
from janus_pretrain.downstream.classification import SequenceClassifier, encode_all, predict_logits
from janus_pretrain.downstream.finetune import FinetuneOptions, train_classifier
from janus_pretrain.downstream.task_metrics import compute_metrics
from janus_pretrain.downstream.tsv import LabelledTable, kfold, split_valid
from janus_pretrain.downstream.variants import score_variants
from janus_pretrain.evaluation.probes import embed_sequences, fit_probe, kmer_baseline
from janus_pretrain.evaluation.readers import classification_targets, read_snv_task, read_table, regression_targets
from janus_pretrain.evaluation.registry import Task
from janus_pretrain.model import JanusForPretraining

MODELS = ("pretrained", "random", "kmer")


class EvaluationError(ValueError):
    """A task that cannot be evaluated; the message names the task and what to fix."""


@dataclass
class Fold:
    train: tuple[list[str], np.ndarray]  # (sequences, targets)
    valid: tuple[list[str], np.ndarray]
    test: tuple[list[str], np.ndarray]


@dataclass
class TaskData:
    folds: list[Fold]
    classes: list[str]  # classification: class names in index order; else empty
    counts: dict[str, int]  # rows per split (first fold)


def _subsample(table: LabelledTable, limit: int, seed: int) -> LabelledTable:
    if not limit or len(table.sequences) <= limit:
        return table
    rows = sorted(random.Random(seed).sample(range(len(table.sequences)), limit))
    return LabelledTable(table.path, [table.sequences[i] for i in rows], [table.labels[i] for i in rows],
                         [table.lines[i] for i in rows])


def load_task_data(task: Task) -> TaskData:
    spec, split = task.spec, task.spec.split
    read = lambda role: read_table(task.files[role], spec.format, spec.sequence_column, spec.label_column)  # noqa: E731
    train = read("train")
    stratify = task.kind == "classification"
    if split.rule == "given":
        parts = [(train, read("valid"), read("test"))]
    elif split.rule == "valid_fraction":
        parts = [(*split_valid(train, split.valid_fraction, split.seed, stratify), read("test"))]
    else:
        parts = [(*split_valid(rest, split.valid_fraction, split.seed, stratify), fold)
                 for rest, fold in kfold(train, split.folds, split.seed, stratify)]
    classes = sorted(set(train.labels)) if task.kind == "classification" else []
    if task.kind == "classification" and len(classes) < 2:
        raise EvaluationError(f"task {task.name}: only one class {classes} in {task.files['train']}")

    def targets(table: LabelledTable) -> np.ndarray:
        if task.kind == "classification":
            return classification_targets(table, classes)
        return regression_targets(table, spec.label_column)

    folds = []
    for tr, va, te in parts:
        tr = _subsample(tr, task.recipe.max_train, split.seed)
        folds.append(Fold((tr.sequences, targets(tr)), (va.sequences, targets(va)), (te.sequences, targets(te))))
    first = folds[0]
    return TaskData(folds, classes, {"train": len(first.train[0]), "valid": len(first.valid[0]),
                                     "test": len(first.test[0]), "folds": len(folds)})


def _finetune_options(task: Task, seed: int) -> FinetuneOptions:
    r = task.recipe
    return FinetuneOptions(epochs=r.epochs, max_steps=r.max_steps, batch_size=r.batch_size, lr=r.lr,
                           weight_decay=r.weight_decay, patience=r.patience, eval_every=r.eval_every,
                           rc_conjoin=r.rc_conjoin, pooling=r.pooling, dropout=r.dropout, seed=seed)


class SuiteRunner:
    """Holds the pretrained model once; builds random-init copies per seed."""

    def __init__(self, pretrained: JanusForPretraining, threads_note: str = "", log=print):
        self.pretrained, self.log = pretrained.eval(), log
        self.config = pretrained.config
        self._embeddings: dict[tuple, np.ndarray] = {}
        self.threads_note = threads_note

    def model_for(self, name: str, seed: int | None) -> JanusForPretraining:
        if name == "pretrained":
            return self.pretrained
        torch.manual_seed(seed)
        return JanusForPretraining(self.config).eval()

    # ---- one (task, model, seed) unit: a list of per-fold records ----
    def run_unit(self, task: Task, data: TaskData | None, model_name: str, seed: int | None, bar=None) -> list[dict]:
        started = time.time()
        if task.kind == "zero_shot_snv":
            records = [self._zero_shot(task, model_name, seed)]
        elif model_name == "kmer":
            records = [self._kmer(task, data, fold) for fold in data.folds]
        elif task.recipe.head == "probe":
            records = [self._probe(task, data, model_name, seed, k, fold) for k, fold in enumerate(data.folds)]
        else:
            records = [self._finetune(task, data, model_name, seed, fold, bar) for fold in data.folds]
        seconds = round(time.time() - started, 2)
        return [{"model": model_name, "seed": seed, "fold": k, "seconds": seconds, **r} for k, r in enumerate(records)]

    def _kmer(self, task: Task, data: TaskData, fold: Fold) -> dict:
        result = kmer_baseline(task.kind, task.metrics, fold.train, fold.valid, fold.test, task.recipe.kmer_k,
                               task.recipe.probe_c, 0, task.recipe.rc_conjoin, len(data.classes))
        return {"valid": result.valid, "test": result.test, "chosen": result.chosen}

    def _probe(self, task: Task, data: TaskData, model_name: str, seed: int | None, k: int, fold: Fold) -> dict:
        model = self.model_for(model_name, seed)
        feats = {}
        for split in ("train", "valid", "test"):
            key = (task.name, task.version, model_name, seed, k, split)
            if key not in self._embeddings:
                sequences = getattr(fold, split)[0]
                try:
                    self._embeddings[key] = embed_sequences(model.backbone, sequences, task.recipe.batch_size,
                                                            task.recipe.rc_conjoin, pooling=task.recipe.pooling)
                except ValueError as exc:
                    raise EvaluationError(f"task {task.name}: {exc}") from None
            feats[split] = (self._embeddings[key], getattr(fold, split)[1])
        result = fit_probe(task.kind, task.metrics, feats["train"], feats["valid"], feats["test"], task.recipe.probe_c,
                           0, len(data.classes))
        return {"valid": result.valid, "test": result.test, "chosen": result.chosen}

    def _finetune(self, task: Task, data: TaskData, model_name: str, seed: int, fold: Fold, bar) -> dict:
        if task.kind != "classification":
            raise EvaluationError(f"task {task.name}: recipe head 'finetune' supports classification only; "
                                  f"use head 'probe' for {task.kind}")
        options = _finetune_options(task, seed)
        lengths = {len(s) for part in (fold.train, fold.valid, fold.test) for s in part[0]}
        if options.pooling == "flatten" and len(lengths) != 1:
            raise EvaluationError(f"task {task.name}: pooling 'flatten' needs one sequence length, found "
                                  f"{sorted(lengths)[:5]}")
        backbone = copy.deepcopy(self.model_for(model_name, seed).backbone)
        torch.manual_seed(seed)
        model = SequenceClassifier(backbone, len(data.classes), options.rc_conjoin, options.dropout, options.pooling,
                                   lengths.pop() if options.pooling == "flatten" else 0)

        mode = backbone.config.tokenizer
        best, history = train_classifier(model, encode_all(fold.train[0], mode), fold.train[1].tolist(),
                                         encode_all(fold.valid[0], mode), fold.valid[1].tolist(), options,
                                         log=lambda *_: None, progress=step_bar(bar))
        out = {}
        for split in ("valid", "test"):
            logits = predict_logits(model, encode_all(getattr(fold, split)[0], mode), options.batch_size)
            out[split] = compute_metrics(task.metrics, logits.numpy(), getattr(fold, split)[1])
        last = history[-1] if history else {}
        return {**out, "chosen": {"steps": last.get("step"), "epochs_run": (last.get("epoch") or 0) + 1},
                "history": history}

    def _zero_shot(self, task: Task, model_name: str, seed: int | None) -> dict:
        if model_name == "kmer":
            raise AssertionError("the caller records kmer as not applicable for zero-shot tasks")
        variants, labels = read_snv_task(task.files["variants"], task.spec.label_column)
        rows = score_variants(self.model_for(model_name, seed), task.files["fasta"], variants, task.recipe.window,
                              task.recipe.batch_size, on_ref_mismatch="error")
        bad = [(v, r["status"]) for v, r in zip(variants, rows) if r["status"] != "ok"]
        if bad:
            raise EvaluationError(f"task {task.name}: {len(bad)} variants cannot be scored, first {bad[0][0].where}: "
                                  f"{bad[0][1]}; a zero-shot SNV task takes single-base A/C/G/T substitutions only")
        # label 1 = expected deleterious; the model's score log P(alt) - log P(ref) is low for those
        score = -np.array([r["score"] for r in rows])
        return {"test": compute_metrics(task.metrics, score, labels), "valid": {}, "chosen": {"window": task.recipe.window}}


def plan_units(task: Task, models: list[str], seeds: list[int]) -> tuple[list[tuple[str, int | None]], dict[str, str]]:
    """(model, seed) pairs to run, and {model: reason} for models that do not apply to the task."""
    units, not_applicable = [], {}
    for name in models:
        if name == "kmer" and task.kind == "zero_shot_snv":
            not_applicable[name] = "zero-shot tasks score variants with the model's own likelihood; no k-mer analogue"
            continue
        deterministic = name == "kmer" or (name == "pretrained" and task.recipe.head == "probe") or \
            (name == "pretrained" and task.kind == "zero_shot_snv")
        units += [(name, None)] if deterministic else [(name, s) for s in seeds]
    return units, not_applicable


def run_tasks(runner: SuiteRunner, tasks: list[Task], models: list[str], seeds: list[int],
              show_progress: bool | None = None) -> dict[str, dict]:
    """{task name: {"data": counts, "runs": [...], "not_applicable": {...}}}; progress bars for
    task/model/seed units and, inside full finetuning, for optimizer steps (show_progress None:
    only on a terminal)."""
    plans = {t.name: plan_units(t, models, seeds) for t in tasks}
    disable = bar_disable(show_progress)
    outer = tqdm(total=sum(len(u) for u, _ in plans.values()), desc="evaluate", unit="run", disable=disable)
    inner = tqdm(total=0, desc="  steps", unit="step", leave=False, disable=disable)
    results = {}
    try:
        for task in tasks:
            data = None if task.kind == "zero_shot_snv" else load_task_data(task)
            units, not_applicable = plans[task.name]
            runs = []
            for model_name, seed in units:
                outer.set_description(f"{task.name} {model_name} seed {seed if seed is not None else '-'}")
                inner.reset()
                runs += runner.run_unit(task, data, model_name, seed, inner)
                outer.update(1)
            results[task.name] = {"data": data.counts if data else {}, "classes": data.classes if data else [],
                                  "runs": runs, "not_applicable": not_applicable}
    finally:
        inner.close()
        outer.close()
    return results


def load_model(export_dir: str | Path) -> JanusForPretraining:
    from janus_pretrain.export import load_pretrained

    return load_pretrained(export_dir)
