"""Build everything a run needs, in the order that fails fast, and train.

1. launcher environment -> rank and world size (cheap);
2. startup checks (config, batch arithmetic, manifest, checkpoint dir): one clear message each;
3. process group + expert groups (the CPU shm op build happens here);
4. model (same seed on every rank), data streams, Trainer; train.

Tests inject their own data stream and Trainer subclass through run_pretraining's arguments,
so they run exactly this build order.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch

from janus_pretrain.checkpoint.layout import CheckpointError
from janus_pretrain.config import ConfigError, RunConfig
from janus_pretrain.data.manifest import ManifestError
from janus_pretrain.engine.distributed import StoppedWaiting, init_distributed, prepare_environment, shutdown
from janus_pretrain.engine.preemption import PREEMPTED_EXIT_CODE, Preempted, PreemptionFlag
from janus_pretrain.engine.startup import startup_checks

DIVERGED_EXIT_CODE = 3  # stopped after train.max_bad_steps consecutive NaN/inf steps
CONFIG_EXIT_CODE = 2  # a startup check failed, or the checkpoint to resume does not fit the run


def build_model(config: RunConfig, ctx, message: Callable[[str], None] = lambda line: None) -> torch.nn.Module:
    """The model of this rank (its experts only), initialised from checkpoint.init_from when
    set and there is no checkpoint of the run's own to resume."""
    from janus_pretrain.model import JanusForPretraining

    torch.manual_seed(config.train.seed)  # identical initial weights on every rank and any ep_size
    model = JanusForPretraining(config.model, ep_group=ctx.ep_group, ep_group_name=ctx.ep_group_name,
                                mask_seed=config.train.seed, cp_group=getattr(ctx, "cp_group", None))
    if config.checkpoint.init_from:
        from janus_pretrain.checkpoint.warm_start import initial_weights, load_into, will_resume

        if will_resume(config):
            message(f"checkpoint.init_from={config.checkpoint.init_from} not used: resuming this run's own "
                    f"checkpoint in {config.checkpoint.dir}")
        else:
            state, source = initial_weights(config.checkpoint.init_from, config.model, config.source or "<config>")
            load_into(model, state)
            message(f"initialised from {source}: step 0, fresh optimizer, schedule and data stream")
    return model


def parameter_line(config: RunConfig) -> str:
    """Counted on a full model (every expert) on the meta device: no memory, no RNG, no process group."""
    from janus_pretrain.model import JanusForPretraining

    with torch.device("meta"):
        total, activated = JanusForPretraining(config.model).parameter_counts()
    return f"objective {config.model.objective}: {total:,} parameters, {activated:,} activated per token"


def build_data(config: RunConfig, ctx, micro_batch: int):
    """The train stream of this rank, a factory of its validation batches, the species names.
    Every rank of a context-parallel group reads the same samples (its data rank); the trainer
    and the validation keep the rank's slice of each (JanusForPretraining.local_slice)."""
    from janus_pretrain.data import TokenEncoding, TrainStream, validation_batches

    encoding = TokenEncoding(config.model.tokenizer, config.model.loss_targets)
    stream = TrainStream(config.data, micro_batch=micro_batch, rank=ctx.data_rank, world_size=ctx.data_ranks,
                         seed=config.train.seed, encoding=encoding)

    def valid():
        return validation_batches(config.data, micro_batch=micro_batch, rank=ctx.data_rank, world_size=ctx.data_ranks,
                                  encoding=encoding)
    return stream, valid, list(stream.species_names)


def run_pretraining(config: RunConfig, *, data: Callable = build_data, trainer_class=None,
                    check_data_files: bool = True, on_exit: Callable | None = None) -> int:
    """Train; returns the process exit code (0, 75 preempted, 2 bad config or damaged data, 3 diverged).

    data(config, ctx, micro_batch) -> (stream, valid factory or None, species names);
    trainer_class: a Trainer subclass (tests inject failures); on_exit(trainer, code) runs on
    every rank after training ended in one of those codes (tests collect weights there)."""
    preemption = PreemptionFlag().install()  # early: a signal during the slow startup must not kill us
    ranks = prepare_environment()
    is_rank0 = ranks["rank"] == 0
    try:
        plan = startup_checks(config, ranks["world_size"], check_data_files=check_data_files)
    except ConfigError as exc:
        if is_rank0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return CONFIG_EXIT_CODE
    if is_rank0:
        print(config.model.describe_layers(), flush=True)
        print(parameter_line(config), flush=True)
        print(f"batch: {plan.micro_batch} x {plan.seq_len} bp x {plan.grad_accum} accumulation x {plan.ranks_text} "
              f"= {plan.tokens_per_step} tokens per optimizer step; ZeRO-{config.parallel.zero_stage}, "
              f"ep_size {config.parallel.ep_size}, {config.train.precision}", flush=True)
    from janus_pretrain.engine.trainer import Trainer, TrainingDiverged  # imports DeepSpeed: after the checks

    try:
        ctx = init_distributed(config.parallel.ep_size, stop_requested=lambda: preemption.requested,
                               cp_size=config.parallel.cp_size)
    except StoppedWaiting as exc:
        print(f"{exc}; nothing trained, exit code {PREEMPTED_EXIT_CODE}", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT_CODE
    agreed_exit = False  # set on paths every rank takes together; only then is a final barrier safe
    trainer = None
    try:
        model = build_model(config, ctx, message=lambda line: print(line, flush=True) if is_rank0 else None)
        stream, valid, species = data(config, ctx, plan.micro_batch)
        trainer = (trainer_class or Trainer)(config, ctx, plan, model, train_stream=stream, valid_batches=valid,
                                             species_names=species, preemption=preemption)
        try:
            trainer.train()
            code = 0  # the trainer printed the run summary (engine/summary.py)
        except Preempted as exc:
            if is_rank0:
                print(str(exc), flush=True)
            code = PREEMPTED_EXIT_CODE
        except TrainingDiverged as exc:
            if is_rank0:
                print(f"error: {exc}", file=sys.stderr, flush=True)
            code = DIVERGED_EXIT_CODE
        agreed_exit = True
        if on_exit is not None:
            on_exit(trainer, code)
        return code
    except (ConfigError, CheckpointError) as exc:  # e.g. resuming a checkpoint written with another world size
        if is_rank0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        # every rank takes these decisions together (the resume choice and the save outcome are
        # agreed through collectives, config checks are the same everywhere): leave together, or
        # a rank still tearing down its process group aborts when the first one is gone
        agreed_exit = True
        return CONFIG_EXIT_CODE
    except ManifestError as exc:  # a damaged shard or sample (data.on_corrupt: error): only this rank read it
        print(f"error: rank {ranks['rank']}: {exc}", file=sys.stderr, flush=True)
        return CONFIG_EXIT_CODE
    finally:
        # after an unexpected error on one rank, a barrier would wait forever for ranks that are
        # still inside a collective; exit with the traceback instead and let the launcher stop them
        shutdown(barrier=agreed_exit)
