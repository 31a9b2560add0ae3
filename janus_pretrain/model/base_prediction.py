"""P(base at p | what the objective lets the model see), aligned the same way for every objective.

This is the one metric that compares objectives (docs/objectives.md): cross-entropy and accuracy
of predicting x[p] at held-out positions.

  janus  one forward pass: logits[p] never saw x[p] and saw both sides
  clm    one forward pass: logits[p - 1] saw x[0..p-1] only (left context; x[0] has no prediction)
  mlm    `passes` forward passes over a fixed comb: pass j replaces the A/C/G/T positions with
         p % passes == j by [MASK] and reads the prediction there, so every base is masked
         exactly once and always 100% [MASK] (no random or kept tokens at evaluation)

The number of mlm passes is round(1 / model.mlm_probability) (7 at 15%): each pass masks about
the fraction the model was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from janus_pretrain.model.mlm_corruption import comb_masks


@dataclass
class BasePredictions:
    logits: torch.Tensor  # (B, L, vocab) fp32, row p predicts x[p]
    predicted: torch.Tensor  # (B, L) bool: positions that got a prediction


def mlm_eval_passes(probability: float) -> int:
    return max(1, round(1.0 / probability))


@torch.no_grad()
def predict_bases(model, input_ids: torch.Tensor) -> BasePredictions:
    """`model` is a JanusForPretraining (or anything with .config and model(ids).logits)."""
    config = model.config
    objective = getattr(config, "objective", "janus")
    if objective == "janus":
        logits = model(input_ids).logits.float()  # (B, L, V)
        return BasePredictions(logits, torch.ones_like(input_ids, dtype=torch.bool))
    if objective == "clm":
        logits = model(input_ids).logits.float()
        aligned = F.pad(logits[:, :-1], (0, 0, 1, 0))  # row p <- the prediction made at p - 1
        predicted = torch.ones_like(input_ids, dtype=torch.bool)
        predicted[:, 0] = False
        return BasePredictions(aligned, predicted)
    if objective != "mlm":
        raise ValueError(f"unknown model.objective {objective!r}; expected janus, mlm or clm")
    aligned = None
    predicted = torch.zeros_like(input_ids, dtype=torch.bool)
    for masked, chosen in comb_masks(input_ids, mlm_eval_passes(config.mlm_probability)):
        logits = model(masked).logits.float()  # (B, L, V)
        if aligned is None:
            aligned = torch.zeros_like(logits)
        aligned = torch.where(chosen[..., None], logits, aligned)
        predicted |= chosen
    return BasePredictions(aligned, predicted)
