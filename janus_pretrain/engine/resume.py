"""What a resumed run takes from its checkpoint and what from its own run config.

The checkpoint is the truth for the state: weights, optimizer moments, counters, data position,
RNG, on the run's own parallel layout (world size, ep_size, ZeRO stage, cp_size: a different one
is resharded by checkpoint/reshard.py, as long as the global batch and the micro batch stay).
Context parallelism changes neither the weights nor the optimizer state (ZeRO partitions them
over all ranks either way); the data position belongs to the data-parallel ranks (world /
cp_size of them, each CP group's ranks hold the same one), so a cp_size change is a change of
data-parallel degree like any other. The run config is the truth for the settings: optimizer hyper-parameters (lr, betas, eps,
weight decay), the schedule (warm-up, min lr, total steps) and clipping apply from the resumed
step on, and what changed is logged. The architecture, the precision and the data section cannot change
(the weights and the data position would not mean the same): one clear error listing the keys.
"""
from __future__ import annotations

from pathlib import Path

from janus_pretrain import deepspeed_internals as ds
from janus_pretrain.checkpoint.layout import META, CheckpointError
from janus_pretrain.checkpoint.meta import CheckpointMeta, Layout
from janus_pretrain.config import BatchPlan, RunConfig, to_dict
from janus_pretrain.model_config import architecture_differences, describe_differences

# run-config keys whose change takes effect on resume
SETTINGS = {"optimizer": ("lr", "betas", "eps", "weight_decay"), "schedule": ("warmup_fraction", "min_lr"),
            "train": ("steps", "grad_clip")}


def _diff(old: dict, new: dict, prefix: str) -> list[str]:
    return [f"{prefix}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def check_architecture(folder: Path, meta: CheckpointMeta, config: RunConfig) -> None:
    """The checkpoint's model must be the run's model, runtime knobs aside."""
    changed = architecture_differences(meta.model_config(str(folder / META)), config.model)
    if changed:
        raise CheckpointError(f"checkpoint {folder} (there) holds another model than {config.source or 'the run config'} "
                              f"(here): {describe_differences(changed)}; resume with the checkpoint's model section, "
                              f"or start a new run (--resume none or another checkpoint.dir)")


def check_precision(folder: Path, meta: CheckpointMeta, config: RunConfig) -> None:
    """DeepSpeed names and fills its ZeRO state by precision: a resume keeps train.precision."""
    if meta.precision != config.train.precision:
        raise CheckpointError(f"checkpoint {folder} was trained with train.precision={meta.precision}, "
                              f"{config.source or 'the run config'} has train.precision={config.train.precision}; "
                              f"resume with train.precision={meta.precision}, or start a new run from its weights "
                              f"(checkpoint.init_from)")


def check_batch(folder: Path, meta: CheckpointMeta, layout: Layout, plan: BatchPlan) -> None:
    """On another layout (this run's world_size, ep_size, zero_stage) the run continues only with
    the saved global and micro batch (the same samples per optimizer step); say which setting keeps it."""
    if meta.layout == layout:
        return
    streams, data_ranks = meta.data_streams, plan.data_ranks
    if streams and streams % data_ranks:
        raise CheckpointError(f"checkpoint {folder}: its data stream has {streams} slots (data.streams), which "
                              f"{data_ranks} data-parallel ranks ({plan.world_size} ranks / cp_size {plan.cp_size}) "
                              f"cannot share evenly; resume on a number of data-parallel ranks dividing {streams}")
    saved_tokens = meta.tokens_per_step
    if meta.micro_batch != plan.micro_batch:
        raise CheckpointError(f"checkpoint {folder} was trained with train.micro_batch={meta.micro_batch}, this run "
                              f"has {plan.micro_batch}; a resume on another layout keeps the micro batch (set "
                              f"train.micro_batch={meta.micro_batch})")
    if saved_tokens != plan.tokens_per_step:
        accum, rest = divmod(saved_tokens, plan.micro_batch * plan.seq_len * data_ranks)
        fix = (f"set train.global_batch_tokens={saved_tokens} and train.grad_accum=0 (= {accum} on "
               f"{data_ranks} data-parallel ranks)") if not rest and accum else \
            f"use a data-parallel rank count that divides {saved_tokens // (plan.micro_batch * plan.seq_len)} " \
            f"micro batches per step"
        raise CheckpointError(f"checkpoint {folder} used {saved_tokens} tokens per optimizer step "
                              f"({meta.layout.data_ranks} data-parallel ranks x {meta.grad_accum} accumulation), this "
                              f"run {plan.tokens_per_step} ({data_ranks} data-parallel ranks x {plan.grad_accum}); a "
                              f"resume on another layout keeps the global batch: {fix}")


def load_data_state(stream, restored, config: RunConfig) -> None:
    """Continue the data stream exactly, or say which data keys changed and what to do. After a
    layout change every source data-parallel rank's state is merged into one the new ranks split
    among them (the ranks of a CP group hold the same state: the group's first speaks for it)."""
    try:
        if restored.all_components is not None:
            cp = restored.meta.layout.cp_size  # all_components is in rank order
            state = stream.global_state([c["data"] for rank, c in enumerate(restored.all_components)
                                         if rank % cp == 0])
        else:
            state = restored.components["data"]
        stream.load_state_dict(state)
    except ValueError as exc:
        changed = _diff(restored.meta.section("data"), to_dict(config.data), "data")
        raise CheckpointError(f"checkpoint {restored.folder}: the data stream cannot continue exactly "
                              f"({str(exc).splitlines()[0]})"
                              + (f"; changed: {'; '.join(changed)}" if changed else "")
                              + "; resume with the checkpoint's data section, or start a new run "
                                "(--resume none, or checkpoint.init_from for its weights)") from None


def apply_run_hyperparameters(engine, meta: CheckpointMeta, config: RunConfig) -> list[str]:
    """Put the run config's optimizer settings and peak lr into the resumed optimizer and lr
    schedule (the schedule's shape already comes from the run config); returns what changed."""
    changed = []
    for section, keys in SETTINGS.items():
        now, saved = to_dict(getattr(config, section)), meta.section(section)
        changed += _diff({k: saved.get(k) for k in keys}, {k: now[k] for k in keys}, section)
    if not changed:
        return []  # leave the restored state untouched: bit-identical continuation
    opt = config.optimizer
    scheduler = engine.lr_scheduler
    for group in scheduler.optimizer.param_groups:
        group["betas"] = tuple(opt.betas)
        group["eps"] = opt.eps
        group["weight_decay"] = opt.weight_decay if group.get("decay_kind", "decay") == "decay" else 0.0
    ds.set_peak_lr(scheduler, opt.lr)
    return changed
