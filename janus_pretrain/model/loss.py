"""Pretraining loss: cross-entropy at every position whose target is A/C/G/T (clm: target x[p+1];
mlm: the model zeroes the weight of positions it did not choose).

With chunk > 0 the head and the loss run over `chunk` positions at a time under activation
checkpointing, so full-length (B, L, vocab) fp32 logits never exist (1 Mbp x 16 x 4 bytes per
sample, plus its gradient and softmax).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from janus_pretrain.tokenizer import A_ID, PAD_ID, T_ID


def target_weights(labels: torch.Tensor, loss_weight: torch.Tensor | None, targets: str = "bases") -> torch.Tensor:
    """(B, L) float: 0 where the target does not count, else loss_weight or 1. targets "bases": A/C/G/T
    count (not N, padding, specials); "non_pad" (official JanusDNA): everything but [PAD] counts."""
    counted = (labels != PAD_ID) if targets == "non_pad" else (labels >= A_ID) & (labels <= T_ID)
    return counted.float() if loss_weight is None else counted.float() * loss_weight.float()


def next_base_targets(labels: torch.Tensor, loss_weight: torch.Tensor | None):
    """clm: the target of position p is x[p+1]; the last position has none (PAD, weight 0)."""
    shifted = F.pad(labels[:, 1:], (0, 1), value=PAD_ID)  # (B, L)
    weight = None if loss_weight is None else F.pad(loss_weight[:, 1:], (0, 1), value=0.0)
    return shifted, weight


def _weighted_ce_sum(head, hidden: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()  # (B, l, V)
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return (ce * weights.flatten()).sum()


def janus_loss(head, hidden: torch.Tensor, labels: torch.Tensor, loss_weight: torch.Tensor | None,
               chunk: int = 0, targets: str = "bases", context=None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Returns (logits or None when chunked, weighted mean CE over the counted targets).

    context (model/context_parallel.py): hidden and labels are this rank's slice; sum and count
    are the whole sequence's (summed over the CP group), so every rank returns the same mean.
    """
    weights = target_weights(labels, loss_weight, targets)
    counted = weights.sum() if context is None else context.total(weights.sum())
    denominator = counted.clamp(min=1.0)
    logits = None
    if chunk <= 0 or chunk >= labels.shape[1]:
        logits = head(hidden)
        ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")
        total = (ce * weights.flatten()).sum()
    else:
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, labels.shape[1], chunk):
            part = slice(start, start + chunk)
            total = total + checkpoint(_weighted_ce_sum, head, hidden[:, part], labels[:, part], weights[:, part],
                                       use_reentrant=False)
    if context is not None:
        total = context.sum(total)
    return logits, total / denominator
