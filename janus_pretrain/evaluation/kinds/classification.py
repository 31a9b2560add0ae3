"""kind: classification. Sequences with a class label (any number of classes); a logistic-regression
probe or full finetuning (recipe.head), the k-mer baseline, accuracy / MCC / F1 / AUROC."""
from __future__ import annotations

import copy

import numpy as np
import torch

from janus_pretrain.cli import step_bar
from janus_pretrain.downstream.classification import SequenceClassifier, encode_all, predict_logits
from janus_pretrain.downstream.finetune import FinetuneOptions, train_classifier
from janus_pretrain.downstream.task_metrics import compute_metrics
from janus_pretrain.evaluation.kinds.base import EvaluationError, Fold, TaskData
from janus_pretrain.evaluation.kinds.tables import TableKind
from janus_pretrain.evaluation.probes import standardised
from janus_pretrain.evaluation.readers import classification_targets

ABSENT_CLASS = -30.0  # log-probability given to a class the training rows lack (finite: a metric may softmax)


class Classification(TableKind):
    name = "classification"
    metrics = ("accuracy", "mcc", "f1_macro", "auroc")
    default_metrics = metrics
    stratify = True
    selection_order = ("mcc", "accuracy", "auroc", "f1_macro")

    def classes(self, task, train) -> list[str]:
        classes = sorted(set(train.labels))
        if len(classes) < 2:
            raise EvaluationError(f"task {task.name}: only one class {classes} in {task.files['train']}")
        return classes

    def targets(self, task, table, classes: list[str]) -> np.ndarray:
        return classification_targets(table, classes)

    def linear_model(self, c: float, seed: int):
        from sklearn.linear_model import LogisticRegression

        return standardised(LogisticRegression(C=c, max_iter=2000, random_state=seed))

    def predict(self, model, x: np.ndarray, num_classes: int) -> np.ndarray:
        """(N, C) log-probabilities for every class index, also those absent from the training rows."""
        out = np.log(np.clip(model.predict_proba(x), 1e-12, 1.0))
        full = np.full((len(out), num_classes), ABSENT_CLASS)
        full[:, model[-1].classes_] = out
        return full

    def finetune(self, runner, task, data: TaskData, model_name: str, seed: int, fold: Fold, bar) -> dict:
        options = FinetuneOptions.of(task.recipe, seed=seed)
        lengths = {len(s) for part in (fold.train, fold.valid, fold.test) for s in part[0]}
        if options.pooling == "flatten" and len(lengths) != 1:
            raise EvaluationError(f"task {task.name}: pooling 'flatten' needs one sequence length, found "
                                  f"{sorted(lengths)[:5]}")
        backbone = copy.deepcopy(runner.model_for(model_name, seed).backbone)
        torch.manual_seed(seed)
        model = SequenceClassifier(backbone, len(data.classes), options.rc_conjoin, options.dropout, options.pooling,
                                   lengths.pop() if options.pooling == "flatten" else 0)
        mode = backbone.config.tokenizer  # the ids the model was trained on (model.tokenizer)
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
