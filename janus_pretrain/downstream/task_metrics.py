"""Metrics, one home: accuracy, Matthews correlation (any number of classes) and AUROC as exact
torch arithmetic (finetuning needs no extra package), F1 macro, F1 of class 1, multi-class AUROC and
Spearman/Pearson through scikit-learn/scipy, and the registry evaluation suites name them by."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def accuracy(predicted: torch.Tensor, target: torch.Tensor) -> float:
    return float((predicted == target).float().mean())


def matthews_corrcoef(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Gorodkin's multi-class MCC from the confusion matrix; equals the usual MCC for two classes.

    0 when a side has no variance (all predictions, or all targets, one class).
    """
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    confusion.index_put_((target.long(), predicted.long()), torch.ones(len(target), dtype=torch.float64),
                         accumulate=True)
    total, correct = confusion.sum(), confusion.trace()
    true_per_class, pred_per_class = confusion.sum(1), confusion.sum(0)  # (C,), (C,)
    numerator = correct * total - (pred_per_class * true_per_class).sum()
    denominator = torch.sqrt((total ** 2 - (pred_per_class ** 2).sum()) * (total ** 2 - (true_per_class ** 2).sum()))
    return float(numerator / denominator) if denominator > 0 else 0.0


def auroc(score: torch.Tensor, target: torch.Tensor) -> float:
    """Area under the ROC curve for binary targets (1 = positive): the Mann-Whitney U statistic
    with tied scores counted as one half. NaN when one class is absent."""
    score, target = score.double().flatten(), target.flatten().bool()
    n_pos, n_neg = int(target.sum()), int((~target).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(score)
    sorted_score = score[order]
    ranks = torch.empty_like(score)
    ranks[order] = torch.arange(1, len(score) + 1, dtype=torch.float64)
    # average ranks over ties
    unique, inverse, counts = torch.unique_consecutive(sorted_score, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # (U,)
    ranks[order] = mean_rank[inverse]
    u = ranks[target].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def classification_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """logits (N, C) -> accuracy, mcc, and auroc when C == 2 (positive class = index 1)."""
    predicted = logits.argmax(-1)
    metrics = {"accuracy": accuracy(predicted, target),
               "mcc": matthews_corrcoef(predicted, target, logits.shape[-1]),
               "loss": float(torch.nn.functional.cross_entropy(logits.float(), target.long()))}
    if logits.shape[-1] == 2:
        metrics["auroc"] = auroc(logits[:, 1] - logits[:, 0], target)
    return metrics


# ---- the metric registry of evaluation suites (janus_pretrain.evaluation) ----
# Inputs are numpy arrays: classification scores are (N, C) logits or probabilities, regression
# predictions (N,), zero-shot scores (N,) with larger = more likely label 1. scikit-learn and
# scipy (the `eval` extra) are imported only here, so finetuning works without them.

def f1_macro(predicted, target, num_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(target, predicted, labels=list(range(num_classes)), average="macro", zero_division=0))


def f1_binary(predicted, target) -> float:
    """F1 of class 1 (the positive class) for two-class tasks: the NT benchmark's promoter and
    splice-site metric (official.NT_TASKS)."""
    from sklearn.metrics import f1_score

    return float(f1_score(target, predicted, pos_label=1, average="binary", zero_division=0))


def multiclass_auroc(scores, target) -> float:
    """Binary: AUROC of score[:, 1] - score[:, 0]; more classes: macro one-vs-rest AUROC of the softmax.
    NaN when a class is absent from the targets (the area is undefined)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    scores, target = np.asarray(scores, dtype=np.float64), np.asarray(target)
    if scores.shape[1] == 2:
        return auroc(torch.from_numpy(scores[:, 1] - scores[:, 0]), torch.from_numpy(target))
    if len(np.unique(target)) < scores.shape[1]:
        return float("nan")
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return float(roc_auc_score(target, probs, multi_class="ovr", average="macro"))


def _correlation(name: str):
    def compute(predicted, target) -> float:
        import numpy as np
        from scipy import stats

        predicted, target = np.asarray(predicted, dtype=np.float64), np.asarray(target, dtype=np.float64)
        if predicted.std() == 0 or target.std() == 0:
            return float("nan")  # undefined for a constant side
        fn = stats.spearmanr if name == "spearman" else stats.pearsonr
        return float(fn(predicted, target)[0])
    return compute


@dataclass(frozen=True)
class Metric:
    compute: Callable  # (output, target) -> float; output as described above (each task kind lists the metrics it takes)


def _classification(fn):
    import numpy as np

    def compute(scores, target) -> float:
        scores, target = np.asarray(scores), np.asarray(target)
        predicted = torch.from_numpy(scores.argmax(1))
        return fn(predicted, torch.from_numpy(target), scores.shape[1])
    return compute


def _auroc_any(output, target) -> float:
    import numpy as np

    output = np.asarray(output, dtype=np.float64)
    if output.ndim == 1:  # zero-shot score
        return auroc(torch.from_numpy(output), torch.from_numpy(np.asarray(target)))
    return multiclass_auroc(output, target)


METRICS: dict[str, Metric] = {
    "accuracy": Metric(_classification(lambda p, t, c: accuracy(p, t))),
    "mcc": Metric(_classification(matthews_corrcoef)),
    "f1_macro": Metric(_classification(lambda p, t, c: f1_macro(p.numpy(), t.numpy(), c))),
    "f1_binary": Metric(_classification(lambda p, t, c: f1_binary(p.numpy(), t.numpy()))),
    "auroc": Metric(_auroc_any),
    "spearman": Metric(_correlation("spearman")),
    "pearson": Metric(_correlation("pearson")),
}


def compute_metrics(names: list[str], output, target) -> dict[str, float]:
    return {name: METRICS[name].compute(output, target) for name in names}
