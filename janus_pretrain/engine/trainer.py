"""The training loop: DeepSpeed owns backward/step, this file owns the order of things.

One optimizer step = grad_accum micro batches, each `engine.backward` + `engine.step` (DeepSpeed
applies the update at the accumulation boundary). After each optimizer step, one small
all-reduce carries the summed losses, a non-finite flag and the preemption flag, so every rank
takes the same decisions (skip, stop, save) at the same step.

Steps count optimizer steps attempted: a step DeepSpeed skipped because of NaN/inf gradients
still consumes its data and its step number, but no update is applied and the lr schedule
(stepped by DeepSpeed only on applied updates) does not advance.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol

import deepspeed
import torch
import torch.distributed as dist

from janus_pretrain import deepspeed_internals as ds
from janus_pretrain.checkpoint.meta import CheckpointMeta, Layout, Progress
from janus_pretrain.checkpoint.training_state import TrainingCheckpointer
from janus_pretrain.config import BatchPlan, RunConfig, to_dict
from janus_pretrain.engine.deepspeed_config import deepspeed_config, write_json
from janus_pretrain.engine.distributed import DistContext
from janus_pretrain.engine.held_out import held_out_metrics
from janus_pretrain.engine.metrics_log import MetricsLogger, peak_memory_gb
from janus_pretrain.engine.optim import build_optimizer, build_scheduler
from janus_pretrain.engine.preemption import Preempted, PreemptionFlag
from janus_pretrain.engine.resume import (apply_run_hyperparameters, check_architecture, check_batch, check_precision,
                                          load_data_state)
from janus_pretrain.engine.summary import Session, summarize
from janus_pretrain.engine.watchdog import Watchdog
from janus_pretrain.model import JanusForPretraining

if TYPE_CHECKING:  # imported for real only when eval.every is set (it needs scikit-learn)
    from janus_pretrain.evaluation.pretraining_probes import ProbeRunner


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss."""


@dataclass
class TrainResult:
    step: int  # optimizer steps done (attempted)
    loss: float  # global mean loss of the last step
    tokens_seen: int  # tokens consumed on all ranks
    bad_steps: int  # steps skipped for NaN/inf over the whole run
    tag: str | None  # last checkpoint written or resumed from


@dataclass
class StepResult:
    """One optimizer step, as every rank agrees on it after the step's all-reduce."""
    loss: float  # mean total loss over ranks and micro batches (NaN when skipped)
    ce_loss: float  # mean cross-entropy part (finite ranks' sum only when skipped)
    aux_loss: float  # mean MoE load-balancing part (likewise)
    lr: float  # the lr this step's update used
    grad_norm: float  # global gradient norm DeepSpeed measured (NaN if unknown)
    skipped: bool  # a NaN/inf loss or gradient on some rank: no update was applied
    preempt: bool  # some rank received the preemption signal
    time_s: float  # wall time of the step on this rank


class TrainBatches(Protocol):
    """The training stream a Trainer takes (data/loader.py's TrainStream; tests inject their own)."""
    streams: int | None  # slots of the global sample order (data.streams); None: no slots
    corrupt_samples: int  # damaged samples dropped so far, resumes included (data.on_corrupt: skip)

    def __iter__(self) -> Iterator[dict]: ...  # batches {"input_ids": (B, L), "loss_weight": (B, L), ...}
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def global_state(self, states: list[dict]) -> dict: ...  # every source rank's state -> one to split anew
    def close(self) -> None: ...  # stop loader workers


def run_dir(config: RunConfig) -> Path:
    """Where metrics.jsonl, config.json and deepspeed_config.json go: beside checkpoint.dir."""
    return Path(config.checkpoint.dir).resolve().parent


def _probe_runner(config: RunConfig, ctx: DistContext) -> ProbeRunner | None:
    """Downstream probes every eval.every steps (janus_pretrain.evaluation), or None when off; imported
    only when on, so a run without probes needs no scikit-learn."""
    if not (config.eval.suite and config.eval.every):
        return None
    from janus_pretrain.evaluation.pretraining_probes import ProbeRunner

    return ProbeRunner(config.eval, ctx.device, ctx.is_main)


class Trainer:
    """One rank's training loop. Its state, all of it set in __init__ (the session by train()):"""
    config: RunConfig
    ctx: DistContext  # rank, world, expert-parallel groups, device
    plan: BatchPlan  # micro batch x accumulation x ranks
    train_stream: TrainBatches
    valid_batches: Callable[[], Iterable] | None  # -> (species, batch) pairs of this rank; None: no validation
    species_names: list[str]
    preemption: PreemptionFlag
    ds_config: dict  # the DeepSpeed JSON (also written to the run directory)
    moe_layers: list  # the model's MoE layers (their expert counts are logged)
    engine: deepspeed.DeepSpeedEngine
    run_dir: Path
    log: MetricsLogger
    checkpoints: TrainingCheckpointer
    progress: Progress  # counters that survive a restart (meta.json)
    session: Session  # this process's clock and first step (the summary, Progress.train_seconds)
    consecutive_bad: int  # current streak of NaN/inf steps: no checkpoint is written during one
    probes: ProbeRunner | None  # downstream probes every eval.every steps; None when off
    _expert_counts: dict[str, torch.Tensor]  # tokens routed to each expert per MoE layer since the last log

    def __init__(self, config: RunConfig, ctx: DistContext, plan: BatchPlan, model: JanusForPretraining, *,
                 train_stream: TrainBatches, valid_batches: Callable[[], Iterable] | None = None,
                 species_names: list[str] | None = None, preemption: PreemptionFlag | None = None):
        self.config, self.ctx, self.plan = config, ctx, plan
        self.train_stream, self.valid_batches = train_stream, valid_batches
        self.species_names = species_names or []
        self.preemption = preemption or PreemptionFlag()
        self.ds_config = deepspeed_config(config, plan)
        self.moe_layers = list(model.moe_layers())
        ds.attach_moe_markers(model, ctx.ep_size, ctx.ep_group_name)
        optimizer = build_optimizer(model, config.optimizer)
        scheduler = build_scheduler(config.train.steps, config.schedule, config.optimizer.lr)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=self.ds_config, dist_init_required=False)
        ds.check_engine(self.engine)
        self.run_dir = run_dir(config)
        self.log = MetricsLogger(config.logging, self.run_dir, ctx.is_main, config.train.steps, to_dict(config))
        self.checkpoints = TrainingCheckpointer(config.checkpoint.dir, config.checkpoint.keep, ctx, self.log.message,
                                                trust_pickles=config.checkpoint.trust_pickles,
                                                verify=config.checkpoint.verify)
        self.progress = Progress()
        self.session = Session(started=time.perf_counter(), first_step=0, seconds_before=0.0)  # train() restarts it
        self.consecutive_bad = 0
        self.probes = _probe_runner(config, ctx)
        self._expert_counts = {layer.layer_name: torch.zeros(layer.num_experts, dtype=torch.long, device=ctx.device)
                               for layer in self.moe_layers}
        if ctx.is_main:
            write_json(to_dict(config), self.run_dir / "config.json")
            write_json(self.ds_config, self.run_dir / "deepspeed_config.json")

    # counters, read by tests and the launcher
    step = property(lambda self: self.progress.step)
    tokens_seen = property(lambda self: self.progress.tokens_seen)
    bad_steps = property(lambda self: self.progress.bad_steps)
    last_loss = property(lambda self: self.progress.last_loss)
    resumed_tag = property(lambda self: self.checkpoints.resumed_tag)
    last_tag = property(lambda self: self.checkpoints.last_tag)

    @property
    def layout(self) -> Layout:
        """What a checkpoint must match to load without resharding (checkpoint/reshard.py)."""
        return Layout(self.ctx.world_size, self.ctx.ep_size, self.config.parallel.zero_stage, self.ctx.cp_size)

    # ---- the loop ----
    def train(self) -> TrainResult:
        cfg = self.config
        started = time.perf_counter()  # this session's clock (the summary, Progress.train_seconds)
        self.preemption.install()
        self.resume()
        # earlier sessions' time, up to the resumed checkpoint
        self.session = Session(started=started, first_step=self.step, seconds_before=self.progress.train_seconds)
        batches = iter(self.train_stream)
        since_log, tokens_since_log = time.perf_counter(), 0  # the rate logged covers the steps since the last log
        watchdog = Watchdog(self.run_dir, self.ctx.rank, self.ctx.world_size, cfg.train.watchdog_s).start(self.step) \
            if cfg.train.watchdog_s > 0 else None
        beat = watchdog.beat if watchdog else (lambda step, phase: None)
        ended = None  # how train() ended, for the summary; None: an unexpected error (no summary)
        try:
            while self.step < cfg.train.steps:
                beat(self.step + 1, "train step")
                result = self.train_step(batches)
                if watchdog and self.step > self.session.first_step:  # the first step pays warm-up and compilation
                    watchdog.step_took(result.time_s)
                beat(self.step + 1, "after the step (logging, validation, probes, checkpoint)")
                self._record(result)
                tokens_since_log += self.plan.tokens_per_step
                if self.step % cfg.logging.every == 0 or self.step == cfg.train.steps:
                    self._log(tokens_since_log, time.perf_counter() - since_log, result)
                    since_log, tokens_since_log = time.perf_counter(), 0
                if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and self.step < cfg.train.steps:
                    self._validate()
                if self.probes is not None:  # downstream probes; leave the trajectory untouched (see the module)
                    self.probes.maybe_run(self.step, self.engine.module, self.log)
                if result.preempt:
                    tag = self.save()
                    raise Preempted(self.step, tag or self.last_tag, self.preemption.signal_name
                                    or "another rank's signal", saved=tag is not None)
                if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0 and self.step < cfg.train.steps:
                    self.save()
            beat(self.step, "final validation and checkpoint")
            self._validate()
            self.save()
            ended = "finished"
        except Preempted:
            ended = "preempted"
            raise
        except TrainingDiverged:
            ended = "diverged"
            raise
        finally:
            if watchdog:
                watchdog.stop()
            self.preemption.uninstall()
            self.log.close()
            self.train_stream.close()  # stop data-loader workers
            if self.ctx.is_main and ended is not None:  # every rank agreed on this ending
                self._print_summary(time.perf_counter() - self.session.started, ended)
        if self.ctx.is_main:
            print(f"final: step={self.step} loss={self.last_loss:.8g}", flush=True)
        return TrainResult(self.step, self.last_loss, self.tokens_seen, self.bad_steps, self.last_tag)

    def _print_summary(self, wall_time_s: float, ended: str) -> None:
        """Print and write the run summary; a failure to do so is a warning, never a new exit code."""
        try:
            print(summarize(self.progress, self.session, self.log, self.run_dir, self.config.checkpoint.dir,
                            self.last_tag, self.plan.tokens_per_step, wall_time_s, ended).text(), flush=True)
        except (OSError, ValueError) as exc:  # disk full, a validation.jsonl line cut by a kill
            print(f"warning: no run summary: {exc}", file=sys.stderr, flush=True)

    def train_step(self, batches) -> StepResult:
        """grad_accum micro batches and one optimizer step; every rank returns the same result."""
        engine, accum = self.engine, self.plan.grad_accum
        start = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64, device=self.ctx.device)  # loss, ce, aux summed
        skipped_before = ds.skipped_steps(engine)
        lr = engine.get_lr()[0]  # the lr this step's update uses
        for _ in range(accum):
            out = self.forward(next(batches))
            # every rank's loss is its whole sample's, but its gradient only its slice's part: the
            # sample's gradient is the sum over the CP group (model/context_parallel.py). DeepSpeed
            # averages over all world ranks; x cp_size turns that into the data-parallel average
            # (tests/test_engine_context_parallel.py checks the training equals one without CP)
            engine.backward(out.loss * self.ctx.cp_size)
            engine.step()
            sums += torch.stack([t.detach().double() if t is not None else sums.new_zeros(())
                                 for t in (out.loss, out.ce_loss, out.aux_loss)])  # no host sync
            for layer in self.moe_layers:
                self._expert_counts[layer.layer_name] += layer.expert_counts
        local = sums.cpu().tolist()
        nonfinite = 0.0 if all(math.isfinite(v) for v in local) else 1.0
        loss, ce, aux, nonfinite, skipped, preempt = self._all_reduce(
            [*(v if math.isfinite(v) else 0.0 for v in local), nonfinite,
             float(ds.skipped_steps(engine) > skipped_before), float(self.preemption.requested)])
        if nonfinite > 0 and skipped == 0:
            raise RuntimeError("a NaN/inf loss did not make DeepSpeed skip the step; the update was applied")
        n = accum * self.ctx.world_size  # a CP group's ranks all report their sample's loss: the mean is right
        bad = nonfinite > 0 or skipped > 0
        gnorm = engine.get_global_grad_norm()
        return StepResult(loss=float("nan") if bad else loss / n, ce_loss=ce / n, aux_loss=aux / n, lr=lr,
                          grad_norm=float(gnorm) if gnorm is not None else float("nan"),
                          skipped=bad, preempt=preempt > 0, time_s=time.perf_counter() - start)

    # ---- one micro batch; tests override this to inject failures ----
    def forward(self, batch: dict):
        module = self.engine.module
        ids = module.local_slice(batch["input_ids"]).to(self.ctx.device)  # (B, L / cp_size)
        weight = module.local_slice(batch["loss_weight"]).to(self.ctx.device)  # (B, L / cp_size)
        return self.engine(ids, labels=ids, loss_weight=weight)

    def _record(self, result: StepResult) -> None:
        """Advance the counters, write the step's metrics line, stop on a NaN streak."""
        progress = self.progress
        progress.step += 1
        progress.tokens_seen += self.plan.tokens_per_step
        if result.skipped:
            progress.bad_steps += 1
            self.consecutive_bad += 1
            self.log.message(f"step {progress.step}: NaN/inf loss, step skipped (no update); "
                             f"{self.consecutive_bad} in a row, {progress.bad_steps} in total")
        else:
            self.consecutive_bad, progress.last_loss = 0, result.loss
        self.log.step({"step": progress.step, "loss": result.loss,
                       "ce_loss": None if result.skipped else result.ce_loss,
                       "aux_loss": None if result.skipped else result.aux_loss, "lr": result.lr,
                       "grad_norm": result.grad_norm if math.isfinite(result.grad_norm) else None,
                       "tokens_seen": progress.tokens_seen, "skipped": result.skipped})
        limit = self.config.train.max_bad_steps
        if self.consecutive_bad >= limit:
            raise TrainingDiverged(
                f"stopping at step {progress.step}: {self.consecutive_bad} consecutive steps with NaN/inf loss "
                f"(train.max_bad_steps={limit}); last checkpoint: {self.last_tag or 'none'}; "
                f"lower optimizer.lr or raise train.grad_clip, then resume (the run config's optimizer and "
                f"schedule settings replace the checkpoint's)")

    def _all_reduce(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.ctx.device)  # NCCL needs CUDA tensors
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def _validate(self) -> None:
        if self.valid_batches is None:
            return
        results = held_out_metrics(self.engine.module, self.valid_batches(), self.species_names, self.ctx.device,
                                   self.plan.seq_len)
        self.log.validation(self.step, results)
        if "valid/all/loss" in results:
            self.log.message(f"validation at step {self.step}: loss {results['valid/all/loss']:.4f} "
                             f"({results['valid/all/bpc']:.4f} bits per base) accuracy {results['valid/all/accuracy']:.4f}")

    def _log(self, interval_tokens: int, interval_time: float, result: StepResult) -> None:
        counts = {}
        if self._expert_counts:
            stacked = torch.stack(list(self._expert_counts.values()))
            dist.all_reduce(stacked)
            counts = dict(zip(self._expert_counts, stacked.cpu()))
            for value in self._expert_counts.values():
                value.zero_()
        rate = interval_tokens / max(interval_time, 1e-9)
        corrupt = self._all_reduce([float(self.train_stream.corrupt_samples)])[0]  # whole run, all ranks
        values = {"train/loss": result.loss, "train/ce_loss": result.ce_loss, "train/aux_loss": result.aux_loss,
                  "train/lr": result.lr, "train/grad_norm": result.grad_norm, "perf/tokens_per_s": rate,
                  "perf/bp_per_s": rate, "perf/step_time_s": result.time_s,
                  "perf/peak_memory_gb": peak_memory_gb(self.ctx.device), "data/corrupt_samples": corrupt}
        self.log.scalars(self.step, values)
        self.log.experts(self.step, counts)
        self.log.progress(self.step, values)

    # ---- checkpoints (checkpoint/training_state.py owns the files, checkpoint/meta.py meta.json) ----
    def _meta(self) -> CheckpointMeta:
        self.progress.train_seconds = self.session.seconds_before + time.perf_counter() - self.session.started
        return CheckpointMeta.of_run(self.config, self.plan, self.layout, self.progress, self.train_stream.streams)

    def save(self) -> str | None:
        """Checkpoint now, unless this is a streak of NaN/inf steps or some state is not finite
        (then the last good checkpoint stays `latest`); returns the tag written or None."""
        if self.consecutive_bad:
            self.log.message(f"checkpoint: not saving at step {self.step}, inside a streak of {self.consecutive_bad} "
                             f"NaN/inf steps; {self.last_tag or 'no checkpoint'} stays the latest")
            return None
        return self.checkpoints.save(self.engine, self.step, self._meta(), {"data": self.train_stream.state_dict()})

    def _check_resumable(self, folder: Path, meta: CheckpointMeta) -> None:
        check_architecture(folder, meta, self.config)
        check_precision(folder, meta, self.config)
        check_batch(folder, meta, self.layout, self.plan)

    def resume(self) -> None:
        """checkpoint.resume: auto = the newest complete checkpoint that verifies; none; or a tag.
        The checkpoint gives the weights, optimizer moments, counters, data position and RNG;
        the run config gives the optimizer hyper-parameters and the schedule (resume.py)."""
        restored = self.checkpoints.load(self.engine, self.config.checkpoint.resume, self.layout,
                                         check_meta=self._check_resumable)
        if restored is None:
            self.log.truncate_after(0)
            return
        if restored.reshard_note:
            self.log.message(restored.reshard_note)
        load_data_state(self.train_stream, restored, self.config)
        self.progress = restored.meta.progress
        changed = apply_run_hyperparameters(self.engine, restored.meta, self.config)
        self.log.truncate_after(self.step)
        self.log.message(f"resumed from {restored.folder} at step {self.step} ({self.tokens_seen} tokens seen)")
        if changed:
            self.log.message("changed since checkpoint (the run config applies from this step): " + "; ".join(changed))
