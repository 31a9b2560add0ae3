"""AdamW parameter groups (weight-decay split x MoE split) and the learning-rate schedule.

No weight decay (optimizer.no_decay: janus) on parameters marked `_no_weight_decay` by the model
(embedding, Mamba A_log and D) nor on anything with fewer than 2 dimensions (biases, norm
weights); under janusdna, as the official code, on biases and the embedding only (its
add_optimizer_hooks exempts biases and nn.Embedding; its RMSNorm is no torch norm class).

ZeRO-1/2 need expert parameters in their own groups marked `moe: True` and named after their
expert-data-parallel group: it reduces and partitions those groups over that group instead of the
whole data-parallel world (deepspeed.moe.utils.split_params_into_different_moe_groups_for_optimizer
does the split). We pass torch.optim.AdamW as the client optimizer: with the config name "AdamW"
DeepSpeed silently picks FusedAdam, which JIT-compiles for minutes on a CPU machine.
"""
from __future__ import annotations

import torch
from deepspeed.moe.utils import is_moe_param, split_params_into_different_moe_groups_for_optimizer
from torch import nn

from janus_pretrain.config import OptimizerConfig, ScheduleConfig
from janus_pretrain.lr_schedule import timm_warmup_cosine, warmup_cosine


def no_weight_decay(param: torch.Tensor, name: str = "", rule: str = "janus") -> bool:
    if rule == "janusdna":
        return name.endswith(".bias") or name.endswith("embedding.weight")
    return param.ndim < 2 or bool(getattr(param, "_no_weight_decay", False))


def parameter_groups(model: nn.Module, weight_decay: float, rule: str = "janus") -> list[dict]:
    """Groups in a fixed order: decay, no_decay, then one group per (decay kind, expert group).

    Every group carries the names of its parameters ('param_names'), which the checkpoint
    layout records so a converter can map ZeRO's flat partitions back to named tensors.
    """
    decay = {"name": "decay", "decay_kind": "decay", "params": [], "param_names": [], "weight_decay": weight_decay}
    plain = {"name": "no_decay", "decay_kind": "no_decay", "params": [], "param_names": [], "weight_decay": 0.0}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = plain if no_weight_decay(param, name, rule) else decay
        group["params"].append(param)
        group["param_names"].append(name)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [g for g in (decay, plain) if g["params"]]
    # the DeepSpeed helper moves expert params into extra groups with moe=True, named after their
    # expert group ('ep_size_2'): ZeRO looks the expert-data-parallel group up by that name
    split = split_params_into_different_moe_groups_for_optimizer(
        [{k: v for k, v in g.items() if k != "param_names"} for g in groups])
    for group in split:
        group["param_names"] = [names[id(p)] for p in group["params"]]
    return [g for g in split if g["params"]]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay, config.no_decay)
    for group in groups:  # DeepSpeed passes unknown keys through; torch ignores them
        assert all(is_moe_param(p) for p in group["params"]) == group.get("moe", False)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                             weight_decay=config.weight_decay)


def lr_factor(step: int, total_steps: int, schedule: ScheduleConfig, peak_lr: float) -> float:
    """Multiplier of the peak lr before optimizer step `step` (0-based): linear warm-up over
    warmup_fraction * total_steps, then cosine from the peak down to schedule.min_lr (curve
    timm_cosine: the official timm curve, lr_schedule.timm_warmup_cosine)."""
    if schedule.curve == "timm_cosine":
        lr = timm_warmup_cosine(step, total_steps, schedule.warmup_fraction * total_steps, peak_lr,
                                schedule.warmup_init_lr, schedule.min_lr)
        return lr / peak_lr if peak_lr > 0 else 0.0
    warmup = max(1, round(schedule.warmup_fraction * total_steps)) if schedule.warmup_fraction > 0 else 0
    floor = min(schedule.min_lr / peak_lr, 1.0) if peak_lr > 0 else 0.0
    return warmup_cosine(step, total_steps, warmup, floor)


def build_scheduler(total_steps: int, schedule: ScheduleConfig, peak_lr: float):
    """A callable DeepSpeed applies to the optimizer it wraps; DeepSpeed steps it only on applied
    (not skipped) steps and saves its state with each checkpoint."""
    def make(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total_steps, schedule, peak_lr))
    return make
