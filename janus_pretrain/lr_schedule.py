"""The learning-rate shape shared by pretraining (engine/optim.py) and finetuning
(downstream/finetune.py): linear warm-up, then cosine from the peak down to a floor.

A module of its own, free of DeepSpeed and of any config class, so that both callers state only
their own policy (how many warm-up steps, which floor) and the curve itself is written once.
"""
from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, floor: float = 0.0) -> float:
    """Multiplier of the peak lr before optimizer step `step` (0-based): (step + 1) / warmup_steps
    during warm-up, then cosine from 1 down to `floor` at total_steps (and `floor` after it)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def timm_warmup_cosine(step: int, total_steps: int, warmup_steps: float, peak: float, initial: float,
                       floor: float) -> float:
    """The lr (not a multiplier) of timm's CosineLRScheduler with warmup_prefix and t_in_epochs=False,
    stepped once per optimizer step as the official JanusDNA pretraining does: linear from `initial`
    at step 0 to `peak` at warmup_steps (a float: 10% of the steps), then a half cosine over the
    remaining total_steps - warmup_steps down to `floor`, `floor` after it."""
    if step < warmup_steps:
        return initial + step * (peak - initial) / warmup_steps
    span = total_steps - warmup_steps
    if span <= 0 or step - warmup_steps >= span:
        return floor
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))
