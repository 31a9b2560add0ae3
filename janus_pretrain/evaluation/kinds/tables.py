"""What the table kinds share (classification.py, regression.py): labelled sequences in
train/valid/test tables (or folds of one), a frozen-backbone probe, the k-mer baseline, and for
classification full finetuning.

The data: read with the task's format, split by its rule (given files, a validation share cut
from train, or k folds over train; stratified by class for classification), the training rows
subsampled to recipe.max_train (seeded by the split seed). The probe embeds each split once per
(model, seed, fold) and fits a linear model on the cached embeddings, its strength chosen on
validation; the k-mer baseline does the same on k-mer frequencies.
"""
from __future__ import annotations

import numpy as np

from janus_pretrain.config_schema import ConfigError
from janus_pretrain.downstream.tsv import LabelledTable, kfold, split_valid
from janus_pretrain.evaluation.kinds.base import EvaluationError, Fold, TaskData, TaskKind, capped, seeded_rows
from janus_pretrain.evaluation.probes import embed_sequences, fit_probe, kmer_baseline
from janus_pretrain.evaluation.readers import read_table

SPLITS = ("train", "valid", "test")


class TableKind(TaskKind):
    roles = ("train", "valid", "test")
    stratify = False  # split and fold per class
    selection_order: tuple[str, ...] = ()  # metrics that choose hyper-parameters on validation, best first

    # ---- what the two kinds define ----
    def classes(self, task, train: LabelledTable) -> list[str]:
        return []

    def targets(self, task, table: LabelledTable, classes: list[str]) -> np.ndarray:
        raise NotImplementedError

    def linear_model(self, c: float, seed: int):
        """The scikit-learn model the probe and the k-mer baseline fit, at inverse L2 strength c."""
        raise NotImplementedError

    def predict(self, model, x: np.ndarray, num_classes: int) -> np.ndarray:
        """The output task_metrics scores: (N, C) class scores, or (N,) predictions."""
        raise NotImplementedError

    def selection_metric(self, metrics: list[str]) -> str:
        """The metric that chooses hyper-parameters on validation: the first of selection_order reported."""
        return next((m for m in self.selection_order if m in metrics), self.selection_order[0])

    # ---- the suite entry ----
    def check(self, spec, recipe, key: str, where) -> list[str]:
        rule = spec.split.rule
        if rule != "given" and spec.valid:
            raise ConfigError(f"{where}: '{key}.valid' is given but split.rule is {rule!r}, which takes "
                              f"validation rows from train; drop one of them")
        if rule == "kfold" and spec.test:
            raise ConfigError(f"{where}: '{key}.test' is given but split.rule is 'kfold' (every fold is tested once)")
        if not 0 < spec.split.valid_fraction < 1 or spec.split.folds < 2:
            raise ConfigError(f"{where}: '{key}.split' needs 0 < valid_fraction < 1 and folds >= 2")
        return ["train"] + {"given": ["valid", "test"], "valid_fraction": ["test"], "kfold": []}[rule]

    # ---- reading ----
    def load(self, task) -> TaskData:
        spec, split = task.spec, task.spec.split

        def read(role: str) -> LabelledTable:
            return read_table(task.files[role], spec.format, spec.sequence_column, spec.label_column)

        train = read("train")
        if split.rule == "given":
            parts = [(train, read("valid"), read("test"))]
        elif split.rule == "valid_fraction":
            parts = [(*split_valid(train, split.valid_fraction, split.seed, self.stratify), read("test"))]
        else:
            parts = [(*split_valid(rest, split.valid_fraction, split.seed, self.stratify), fold)
                     for rest, fold in kfold(train, split.folds, split.seed, self.stratify)]
        classes = self.classes(task, train)
        folds = []
        for tr, va, te in parts:
            rows = seeded_rows(len(tr.sequences), task.scale.max_train or task.recipe.max_train, split.seed)
            if rows is not None:
                tr = LabelledTable(tr.path, [tr.sequences[i] for i in rows], [tr.labels[i] for i in rows],
                                   [tr.lines[i] for i in rows])
            folds.append(Fold(*((t.sequences, self.targets(task, t, classes)) for t in (tr, va, te))))
        first = folds[0]
        return TaskData(folds, classes, {"train": len(first.train[0]), "valid": len(first.valid[0]),
                                         "test": len(first.test[0]), "folds": len(folds)})

    # ---- running ----
    def deterministic(self, model: str, recipe) -> bool:
        return model == "kmer" or (model == "pretrained" and recipe.head == "probe")

    def run(self, runner, task, data: TaskData, model: str, seed, bar=None) -> list[dict]:
        if model == "kmer":
            return [self._kmer(task, data, fold) for fold in data.folds]
        if task.recipe.head == "probe":
            return [self._probe(runner, task, data, model, seed, k, fold) for k, fold in enumerate(data.folds)]
        return [self.finetune(runner, task, data, model, seed, fold, bar) for fold in data.folds]

    def finetune(self, runner, task, data: TaskData, model: str, seed, fold: Fold, bar) -> dict:
        raise EvaluationError(f"task {task.name}: recipe head 'finetune' supports classification only; "
                              f"use head 'probe' for {self.name}")

    def _kmer(self, task, data: TaskData, fold: Fold) -> dict:
        r = task.recipe
        result = kmer_baseline(self, task.metrics, fold.train, fold.valid, fold.test, r.kmer_k, r.probe_c, 0,
                               r.rc_conjoin, len(data.classes))
        return {"valid": result.valid, "test": result.test, "chosen": result.chosen}

    def _probe(self, runner, task, data: TaskData, model_name: str, seed, k: int, fold: Fold) -> dict:
        model, r = runner.model_for(model_name, seed), task.recipe

        def embed(sequences):
            try:
                return embed_sequences(model.backbone, sequences, r.batch_size, r.rc_conjoin, pooling=r.pooling)
            except ValueError as exc:
                raise EvaluationError(f"task {task.name}: {exc}") from None
        feats = {split: (runner.cached((task.name, task.version, model_name, seed, k, split),
                                       lambda split=split: embed(getattr(fold, split)[0])), getattr(fold, split)[1])
                 for split in SPLITS}
        result = fit_probe(self, task.metrics, feats["train"], feats["valid"], feats["test"], r.probe_c, 0,
                           len(data.classes))
        return {"valid": result.valid, "test": result.test, "chosen": result.chosen}

    # ---- probes during pretraining: the first fold, `limit` rows per split ----
    def probe_data(self, task, limit: int) -> dict:
        data = self.load(task)
        fold = data.folds[0]  # one fold: a probe tracks a trend, the suite run gives the full number
        return {"classes": data.classes, **{split: capped(getattr(fold, split), limit, task.spec.split.seed)
                                            for split in SPLITS}}

    def probe(self, task, data: dict, module, device, is_main: bool) -> dict[str, float]:
        r = task.recipe
        feats = {split: (embed_sequences(module.backbone, data[split][0], r.batch_size, r.rc_conjoin, device),
                         data[split][1]) for split in SPLITS}
        if not is_main:
            return {}
        result = fit_probe(self, task.metrics, feats["train"], feats["valid"], feats["test"], r.probe_c, 0,
                           len(data["classes"]))
        return {**result.test, **{f"valid_{k}": v for k, v in result.valid.items()}}
