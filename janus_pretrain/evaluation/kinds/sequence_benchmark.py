"""What the NT and Genomic Benchmarks kinds share (nt.py, genomic_benchmarks.py): the official
finetune protocol of evaluation/benchmarks/official.py, run on the downloaded dataset.

Per run seed (official: 1-10 for NT, 1-5 for GB) and grid cell (lr x batch size), for the
pretrained model and for its random-init twin:
  split     10% of the distributed train split held out for validation, cut with the run seed as
            the official loader cuts it (protocol.validation_split); not stratified
  inputs    truncated on the right and left-padded with [PAD] to max_length; mean pooling over all
            positions, padding included (downstream.classification.ViewClassifier, pooling mean)
  training  each example's strand drawn per epoch (protocol.random_strand, p 0.5); AdamW, cosine
            warm-up schedule to a floor, the protocol's epochs; the state of the epoch with the best
            validation metric kept (downstream.finetune.train_classifier, which this extends)
  valid/test the logits of the sequence and of its reverse complement, each cut and padded alone,
            averaged (protocol.conjoined_inputs)
The cell is chosen once every seed ran (finalise): the best mean validation metric over seeds
(protocol.choose_on_validation, rule cell_mean); the task's result is that cell's test metric over
the split (mean ± std over seeds); the official per-batch mean is recorded beside it. The k-mer
baseline (strands folded) fits on the first seed's split and never sees the grid.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import random
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from janus_pretrain.cli import step_bar
from janus_pretrain.config_schema import ConfigError
from janus_pretrain.downstream.classification import ViewClassifier, predict_logits
from janus_pretrain.downstream.finetune import FinetuneOptions, train_classifier
from janus_pretrain.downstream.task_metrics import METRICS, compute_metrics
from janus_pretrain.downstream.tsv import LabelledTable
from janus_pretrain.evaluation.benchmarks import official
from janus_pretrain.evaluation.benchmarks.protocol import (GridCell, RunScore, batch_mean_metric, choose_on_validation,
                                                           conjoined_inputs, fit_left_padded, random_strand,
                                                           validation_split)
from janus_pretrain.evaluation.kinds.base import EvaluationError, Fold, TaskData, seeded_rows
from janus_pretrain.evaluation.kinds.classification import Classification
from janus_pretrain.evaluation.probes import kmer_baseline
from janus_pretrain.tokenizer import PAD_ID, encode_numpy

CHOICE_RULE = "cell_mean"  # official.FACTS "grid choice": ours, the official code has none
FILE_ROLES = ("train", "valid", "test", "variants", "fasta")  # TaskSpec file fields a benchmark task leaves empty


@dataclass
class BenchmarkData(TaskData):
    """TaskData whose one fold is the first seed's split (probes and the k-mer baseline), plus the
    whole distributed train split that every run seed splits anew."""
    train_all: tuple[list[str], np.ndarray] = field(default_factory=lambda: ([], np.zeros(0)))


def extend_seeds(official_seeds: tuple[int, ...], count: int | None) -> list[int]:
    """The first `count` official seeds (all when None), continued past the last one when more are asked."""
    if not count:
        return list(official_seeds)
    return list(official_seeds[:count]) + list(range(max(official_seeds) + 1, max(official_seeds) + 1 + count - len(official_seeds)))


def check_benchmark_entry(spec, key: str, where) -> None:
    """A benchmark task reads its suite's data_root with the official protocol: no files, no recipe."""
    for role in FILE_ROLES:
        if getattr(spec, role):
            raise ConfigError(f"{where}: '{key}.{role}': a {spec.kind} task reads the suite's data_root (task "
                              f"'root'), not files; drop '{role}'")
    if spec.recipe:
        raise ConfigError(f"{where}: '{key}.recipe': a {spec.kind} task runs the official protocol "
                          f"(evaluation/benchmarks/official.py); scale it with janus evaluate --window-bp, "
                          f"--max-train, --max-test, --grid, --epochs, --seeds")


class SequenceBenchmark(Classification):
    """Not a kind itself (no name): nt.py and genomic_benchmarks.py say which suite and reader."""
    name = ""
    suite: ClassVar[str] = ""  # official.task's suite key: nt | gb
    protocol: ClassVar[official.FinetuneProtocol]
    roles = ()
    reads_data_root = True
    metrics = ("mcc", "f1_binary", "accuracy", "auroc", "f1_macro")
    default_metrics = ()

    # ---- what the two kinds define ----
    def split_files(self, root, split: str) -> list:
        """The file(s) (or package-layout directory) holding `split` of the task stored at `root`."""
        raise NotImplementedError

    def read_split(self, task, split: str, classes: int) -> LabelledTable:
        raise NotImplementedError

    def data_files(self, spec, root) -> dict:
        files = {}
        for split in ("train", "test"):
            found = self.split_files(root, split)
            files.update({split if i == 0 else f"{split}.{i}": path for i, path in enumerate(found)})
        return files

    # ---- the suite entry ----
    def official_task(self, name: str, key: str = "", where="") -> official.SequenceTask:
        try:
            return official.task(self.suite, name)
        except KeyError as exc:
            raise ConfigError(f"{where}: '{key}.name': {exc.args[0]}") from None

    def check(self, spec, recipe, key: str, where) -> list[str]:
        self.official_task(spec.name, key, where)
        check_benchmark_entry(spec, key, where)
        return []

    def task_metrics(self, spec) -> list[str]:
        return [official.task(self.suite, spec.name).metric]

    def selection_metric(self, metrics: list[str]) -> str:
        return metrics[0]  # the official metric chooses the epoch, the cell and the k-mer model

    def run_seeds(self, task, count: int | None) -> list[int]:
        return extend_seeds(self.protocol.seeds, count)

    def length(self, task) -> int:
        """Bases every input is cut or padded to: the official max_length, or --window-bp."""
        return task.scale.window_bp or official.task(self.suite, task.name).max_length

    def cells(self, task) -> list[GridCell]:
        grid = task.scale.grid or tuple(itertools.product(self.protocol.lrs, self.protocol.batch_sizes))
        return [GridCell(float(lr), int(batch)) for lr, batch in grid]

    def protocol_line(self, task) -> str:
        cells = ", ".join(str(c) for c in self.cells(task))
        scaled = "" if task.scale.is_full() else " (scaled down: --window-bp/--max-train/--max-test/--grid/--epochs)"
        return (f"official {self.suite.upper()} protocol{scaled}: {self.length(task)} bp left-padded, mean pooling, "
                f"strands conjoined; {task.scale.epochs or self.protocol.max_epochs} epochs per cell of [{cells}], "
                f"cell chosen on mean validation {self.selection_metric(task.metrics)}")

    # ---- reading ----
    def load(self, task) -> TaskData:
        facts = official.task(self.suite, task.name)
        train, test = (self.read_split(task, split, facts.classes) for split in ("train", "test"))
        train_all = self._rows(train, task.scale.max_train)
        test_rows = self._rows(test, task.scale.max_test)
        first = self.split(train_all, self.run_seeds(task, None)[0])
        return BenchmarkData([Fold(*first, test_rows)], [str(c) for c in range(facts.classes)],
                             {"train": len(first[0][0]), "valid": len(first[1][0]), "test": len(test_rows[0]),
                              "folds": 1, "distributed_train": len(train.sequences), "distributed_test": len(test.sequences)},
                             train_all)

    @staticmethod
    def _rows(table: LabelledTable, limit: int) -> tuple[list[str], np.ndarray]:
        rows = seeded_rows(len(table.sequences), limit, 0)
        keep = range(len(table.sequences)) if rows is None else rows
        return [table.sequences[i] for i in keep], np.array([int(table.labels[i]) for i in keep], dtype=np.int64)

    def split(self, rows: tuple[list[str], np.ndarray], seed: int):
        """(train, valid) of run seed `seed`, cut as the official loader cuts it."""
        cut = validation_split(self.protocol.split_rule, len(rows[0]), seed, self.protocol.valid_fraction)
        return tuple(([rows[0][i] for i in part], rows[1][part]) for part in (cut.train, cut.valid))

    # ---- running ----
    def deterministic(self, model: str, recipe) -> bool:
        return model == "kmer"

    def run(self, runner, task, data: BenchmarkData, model: str, seed, bar=None) -> list[dict]:
        if model == "kmer":
            fold, r = data.folds[0], task.recipe
            result = kmer_baseline(self, task.metrics, fold.train, fold.valid, fold.test, r.kmer_k, r.probe_c, 0, True,
                                   len(data.classes))
            return [{"valid": result.valid, "test": result.test,
                     "chosen": {**result.chosen, "split_seed": self.run_seeds(task, None)[0]}}]
        train, valid = self.split(data.train_all, seed)
        fold = Fold(train, valid, data.folds[0].test)
        return [self.finetune_cell(runner, task, data, model, seed, fold, cell, bar) for cell in self.cells(task)]

    def finetune_cell(self, runner, task, data: TaskData, model_name: str, seed: int, fold: Fold, cell: GridCell,
                      bar) -> dict:
        protocol, length = self.protocol, self.length(task)
        epochs = task.scale.epochs or protocol.max_epochs
        options = FinetuneOptions(epochs=epochs, batch_size=cell.batch_size, lr=cell.lr,
                                  weight_decay=protocol.weight_decay, patience=epochs + 1,  # no early stop: best epoch kept
                                  warmup_fraction=protocol.warmup_fraction, lr_floor=protocol.lr_floor, seed=seed)
        backbone = copy.deepcopy(runner.model_for(model_name, seed).backbone)
        mode = backbone.config.tokenizer

        def encode(sequence: str):
            return encode_numpy(sequence, mode)

        def one_strand(sequence: str) -> torch.Tensor:
            return torch.from_numpy(fit_left_padded(encode(sequence), length, PAD_ID))

        def both_strands(sequences: list[str]) -> list[torch.Tensor]:  # (2, L) each: forward, reverse complement
            return [torch.from_numpy(np.stack(conjoined_inputs(s, length, encode, PAD_ID))) for s in sequences]

        def epoch_inputs(epoch: int) -> list[torch.Tensor]:
            strand = random.Random(seed * 1_000_003 + epoch)
            return [one_strand(random_strand(s, strand)) for s in fold.train[0]]

        torch.manual_seed(seed)
        model = ViewClassifier(backbone, len(data.classes))
        metric = self.selection_metric(task.metrics)
        valid_ids, test_ids = both_strands(fold.valid[0]), both_strands(fold.test[0])
        _, history = train_classifier(model, [one_strand(s) for s in fold.train[0]], fold.train[1].tolist(), valid_ids,
                                      fold.valid[1].tolist(), options, log=lambda *_: None, progress=step_bar(bar),
                                      selection=metric, epoch_inputs=epoch_inputs)
        out = {}
        for split, ids, target in (("valid", valid_ids, fold.valid[1]), ("test", test_ids, fold.test[1])):
            logits = predict_logits(model, ids, cell.batch_size).numpy()
            out[split] = compute_metrics(task.metrics, logits, target)
            if split == "test":
                out["test_batch_mean"] = {m: batch_mean_metric(METRICS[m].compute, logits, target, cell.batch_size)
                                          for m in task.metrics}
        best = max(history, key=lambda h: (h[f"valid_{metric}"], -h["valid_loss"])) if history else {}
        return {**out, "chosen": {"lr": cell.lr, "batch_size": cell.batch_size, "split_seed": seed, "epochs": epochs,
                                  "best_epoch": best.get("epoch"), "input_length": length},
                "history": history}

    def finalise(self, task, runs: list[dict]) -> tuple[list[dict], dict]:
        """Per finetuned model, the cell with the best mean validation metric over seeds; its runs stay."""
        metric, kept, grid = self.selection_metric(task.metrics), [], {}
        for model in dict.fromkeys(run["model"] for run in runs):
            members = [run for run in runs if run["model"] == model]
            if "lr" not in members[0]["chosen"]:
                kept += members
                continue
            scores = [RunScore(GridCell(r["chosen"]["lr"], r["chosen"]["batch_size"]), r["seed"], r["valid"][metric],
                               r["test"][metric]) for r in members]
            try:
                choice = choose_on_validation(scores, CHOICE_RULE)
            except ValueError as exc:
                raise EvaluationError(f"task {task.name}, model {model}: {exc}") from None
            kept += [{**run, "fold": 0} for run, score in zip(members, scores) if score.cell == choice.cell]
            cells = list(dict.fromkeys(score.cell for score in scores))
            grid[model] = {"rule": CHOICE_RULE, "selected_by": f"valid {metric}",
                           "cell": {"lr": choice.cell.lr, "batch_size": choice.cell.batch_size},
                           "valid": dataclasses.asdict(choice.valid), "test": dataclasses.asdict(choice.test),
                           "cells": [{"lr": c.lr, "batch_size": c.batch_size,
                                      "valid_mean": float(np.mean([s.valid for s in scores if s.cell == c]))}
                                     for c in cells]}
        return kept, {"grid": grid, "grid_runs": [run for run in runs if "lr" in run["chosen"]]}
