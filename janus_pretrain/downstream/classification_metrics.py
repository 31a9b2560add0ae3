"""Classification metrics on torch tensors: accuracy, Matthews correlation (any number of
classes), AUROC (two classes). No sklearn: each is a few lines of exact arithmetic."""
from __future__ import annotations

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
