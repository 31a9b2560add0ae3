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

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist

from janus_pretrain.config import ConfigError, RunConfig, to_dict
from janus_pretrain.engine import checkpoint as ckpt
from janus_pretrain.engine.deepspeed_config import BatchPlan, deepspeed_config, write_json
from janus_pretrain.engine.distributed import DistContext
from janus_pretrain.engine.metrics import MetricsLogger, peak_memory_gb
from janus_pretrain.engine.moe_bridge import attach_moe_markers
from janus_pretrain.engine.optim import build_optimizer, build_scheduler
from janus_pretrain.engine.preemption import Preempted, PreemptionFlag
from janus_pretrain.engine.validation import evaluate
from janus_pretrain.tokenizer import BASE_IDS, N_ID, TOKENIZER_VERSION


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss."""


@dataclass
class TrainResult:
    step: int  # optimizer steps done (attempted)
    loss: float  # global mean loss of the last step
    tokens_seen: int  # tokens consumed on all ranks
    bad_steps: int  # steps skipped for NaN/inf over the whole run
    tag: str | None  # last checkpoint written or resumed from


def run_dir(config: RunConfig) -> Path:
    """Where metrics.jsonl, config.json and deepspeed_config.json go: beside checkpoint.dir."""
    return Path(config.checkpoint.dir).resolve().parent


def vocabulary() -> dict[str, int]:
    from janus_pretrain.tokenizer import SPECIAL_TOKENS

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({base: i for base, i in zip("ACGTN", (*BASE_IDS, N_ID))})
    return vocab


class Trainer:
    def __init__(self, config: RunConfig, ctx: DistContext, plan: BatchPlan, model: torch.nn.Module,
                 train_stream, valid_batches=None, species_names: list[str] | None = None,
                 preemption: PreemptionFlag | None = None):
        """train_stream: iterable of batches with state_dict()/load_state_dict();
        valid_batches: callable returning an iterable of (species, batch) for this rank, or None."""
        self.config, self.ctx, self.plan = config, ctx, plan
        self.train_stream, self.valid_batches = train_stream, valid_batches
        self.species_names = species_names or []
        self.ds_config = deepspeed_config(config, plan)
        self.moe_layers = list(model.moe_layers()) if hasattr(model, "moe_layers") else []
        attach_moe_markers(model, ctx.ep_size, ctx.ep_group_name)
        optimizer = build_optimizer(model, config.optimizer)
        scheduler = build_scheduler(config.train.steps, config.schedule, config.optimizer.lr)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=self.ds_config, dist_init_required=False)
        self.ckpt = ckpt.CheckpointDir(config.checkpoint.dir, config.checkpoint.keep)
        self.run_dir = run_dir(config)
        self.log = MetricsLogger(config.logging.dir, self.run_dir / "metrics.jsonl", ctx.is_main, config.train.steps)
        self.preemption = preemption or PreemptionFlag()
        self.step, self.tokens_seen, self.bad_steps, self.last_tag = 0, 0, 0, None
        self.last_loss = float("nan")  # global mean loss of the last good step
        self.resumed_tag: str | None = None
        self._expert_counts = {self._layer_key(i, m): torch.zeros(m.num_experts, dtype=torch.long, device=ctx.device)
                               for i, m in enumerate(self.moe_layers)}
        if ctx.is_main:
            write_json(to_dict(config), self.run_dir / "config.json")
            write_json(self.ds_config, self.run_dir / "deepspeed_config.json")

    @staticmethod
    def _layer_key(i: int, layer) -> str:
        return getattr(layer, "layer_name", f"moe{i}")

    # ---- one micro batch; tests override this to inject failures ----
    def forward(self, batch: dict):
        ids = batch["input_ids"].to(self.ctx.device)  # (B, L)
        weight = batch["loss_weight"].to(self.ctx.device)  # (B, L)
        return self.engine(ids, labels=ids, loss_weight=weight)

    # ---- checkpoints ----
    def _meta(self) -> dict:
        return {"config": to_dict(self.config), "step": self.step, "tokens_seen": self.tokens_seen,
                "tokenizer_version": TOKENIZER_VERSION, "vocab": vocabulary(),
                "world_size": self.ctx.world_size, "ep_size": self.ctx.ep_size,
                "zero_stage": self.config.parallel.zero_stage, "precision": self.config.train.precision,
                "micro_batch": self.plan.micro_batch, "grad_accum": self.plan.grad_accum,
                "bad_steps": self.bad_steps, "last_loss": self.last_loss}

    def save(self) -> str:
        tag = ckpt.tag_for_step(self.step)
        if tag == self.resumed_tag and self.ckpt.is_complete(tag):
            return tag  # nothing happened since we loaded it: never rewrite the checkpoint in use
        dist.barrier()
        if self.ctx.is_main:
            if self.ckpt.path(tag).exists():  # a dead save or another run's tag: start clean
                shutil.rmtree(self.ckpt.path(tag))
        dist.barrier()
        meta = self._meta()
        self.engine.save_checkpoint(str(self.ckpt.root), tag, client_state={"janus_meta": meta}, save_latest=False)
        folder = self.ckpt.path(tag)
        module = self.engine.module
        if self.ctx.edp_rank == 0:
            expert_names = set(ckpt.expert_param_names(module))
            experts = {n: p.detach().cpu().clone() for n, p in module.named_parameters() if n in expert_names}
            if experts:
                ckpt.atomic_torch_save(experts, folder / f"experts_ep{self.ctx.ep_rank}.pt")
        zero_file = Path(self.engine._get_zero_ckpt_name(str(self.ckpt.root), tag)).name \
            if self.config.parallel.zero_stage > 0 else None
        ckpt.atomic_torch_save({"data": self.train_stream.state_dict(), "rng": ckpt.rng_state(),
                                "rank": self.ctx.rank, "ep_rank": self.ctx.ep_rank, "edp_rank": self.ctx.edp_rank,
                                "zero_file": zero_file, "zero_layout": ckpt.zero_layout(self.engine, module)},
                               folder / f"rank_{self.ctx.rank}.pt")
        dist.barrier()  # every rank's files are on disk
        if self.ctx.is_main:
            self.ckpt.mark_complete(tag, meta)
            self.ckpt.set_latest(tag)
            deleted = self.ckpt.prune(protect={t for t in (tag, self.resumed_tag) if t})
            self.log.message(f"checkpoint: saved {folder}" + (f" (removed {', '.join(deleted)})" if deleted else ""))
        dist.barrier()
        self.last_tag = tag
        return tag

    def resume(self) -> None:
        """checkpoint.resume: auto = latest complete checkpoint if any; none; or a tag."""
        choice = self.config.checkpoint.resume
        tag = None
        if choice == "auto":
            tag = self.ckpt.latest()
        elif choice != "none":
            if not self.ckpt.is_complete(choice):
                raise ConfigError(f"--resume {choice}: no complete checkpoint {self.ckpt.path(choice)} "
                                  f"(complete ones: {', '.join(t for t in self.ckpt.tags() if self.ckpt.is_complete(t)) or 'none'})")
            tag = choice
        shared = [tag]
        dist.broadcast_object_list(shared, src=0)  # every rank resumes from rank 0's choice
        tag = shared[0]
        if tag is None:
            self.log.truncate_after(0)
            return
        folder = self.ckpt.path(tag)
        meta = json.loads((folder / "meta.json").read_text())
        for key, now in (("world_size", self.ctx.world_size), ("ep_size", self.ctx.ep_size),
                         ("zero_stage", self.config.parallel.zero_stage)):
            if meta[key] != now:
                raise ConfigError(f"checkpoint {folder} was written with {key}={meta[key]}, this run has {now}; "
                                  f"resume with the same setting or start fresh with --resume none")
        self.engine.load_checkpoint(str(self.ckpt.root), tag,
                                    custom_load_fn=ckpt.merge_expert_state(folder, self.ctx.ep_rank))
        own = torch.load(folder / f"rank_{self.ctx.rank}.pt", map_location="cpu", weights_only=False)
        self.train_stream.load_state_dict(own["data"])
        ckpt.set_rng_state(own["rng"])
        self.step, self.tokens_seen, self.bad_steps = meta["step"], meta["tokens_seen"], meta["bad_steps"]
        self.last_loss = meta["last_loss"]
        self.resumed_tag = self.last_tag = tag
        self.log.truncate_after(self.step)
        self.log.message(f"resumed from {folder} at step {self.step} ({self.tokens_seen} tokens seen)")

    # ---- the loop ----
    def _all_reduce(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.ctx.device)  # NCCL needs CUDA tensors
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def _validate(self) -> None:
        if self.valid_batches is None:
            return
        results = evaluate(self.engine.module, self.valid_batches(), self.species_names, self.ctx.device,
                           self.plan.seq_len)
        self.log.scalars(self.step, results)
        if "valid/all/loss" in results:
            self.log.message(f"validation at step {self.step}: loss {results['valid/all/loss']:.4f} "
                             f"accuracy {results['valid/all/accuracy']:.4f}")

    def _log(self, interval_tokens: int, interval_time: float, step_time: float, loss, ce, aux, lr, gnorm) -> None:
        counts = {}
        if self._expert_counts:
            stacked = torch.stack(list(self._expert_counts.values()))
            dist.all_reduce(stacked)
            counts = dict(zip(self._expert_counts, stacked.cpu()))
            for value in self._expert_counts.values():
                value.zero_()
        values = {"train/loss": loss, "train/ce_loss": ce, "train/aux_loss": aux, "train/lr": lr,
                  "train/grad_norm": gnorm, "perf/tokens_per_s": interval_tokens / max(interval_time, 1e-9),
                  "perf/bp_per_s": interval_tokens / max(interval_time, 1e-9), "perf/step_time_s": step_time,
                  "perf/peak_memory_gb": peak_memory_gb(self.ctx.device)}
        self.log.scalars(self.step, values)
        self.log.experts(self.step, counts)
        self.log.progress(self.step, values)

    def train(self) -> TrainResult:
        cfg, engine, accum = self.config, self.engine, self.plan.grad_accum
        self.preemption.install()
        self.resume()
        batches = iter(self.train_stream)
        consecutive_bad = 0
        interval_start, interval_tokens = time.perf_counter(), 0
        try:
            while self.step < cfg.train.steps:
                step_start = time.perf_counter()
                sums = torch.zeros(3, dtype=torch.float64, device=self.ctx.device)  # loss, ce, aux summed
                skipped_before = engine.skipped_steps
                lr = engine.get_lr()[0]  # the lr this step's update uses
                for _ in range(accum):
                    out = self.forward(next(batches))
                    engine.backward(out.loss)
                    engine.step()
                    sums += torch.stack([t.detach().double() if t is not None else sums.new_zeros(())
                                         for t in (out.loss, out.ce_loss, out.aux_loss)])  # no host sync
                    for i, layer in enumerate(self.moe_layers):
                        self._expert_counts[self._layer_key(i, layer)] += layer.expert_counts
                skipped = engine.skipped_steps > skipped_before
                local = sums.cpu().tolist()
                nonfinite = 0.0 if all(math.isfinite(v) for v in local) else 1.0
                reduced = self._all_reduce([*(v if math.isfinite(v) else 0.0 for v in local), nonfinite,
                                            float(skipped), float(self.preemption.requested)])
                n = accum * self.ctx.world_size
                loss, ce, aux = (reduced[0] / n, reduced[1] / n, reduced[2] / n)
                bad = reduced[3] > 0 or reduced[4] > 0
                if bad and reduced[4] == 0:
                    raise RuntimeError("a NaN/inf loss did not make DeepSpeed skip the step; the update was applied")
                self.step += 1
                self.tokens_seen += self.plan.tokens_per_step
                interval_tokens += self.plan.tokens_per_step
                step_time = time.perf_counter() - step_start
                gnorm = engine.get_global_grad_norm()
                gnorm = float(gnorm) if gnorm is not None else float("nan")
                if bad:
                    loss = float("nan")
                    self.bad_steps += 1
                    consecutive_bad += 1
                    self.log.message(f"step {self.step}: NaN/inf loss, step skipped (no update); "
                                     f"{consecutive_bad} in a row, {self.bad_steps} in total")
                else:
                    consecutive_bad, self.last_loss = 0, loss
                self.log.step({"step": self.step, "loss": loss, "ce_loss": ce if not bad else None,
                               "aux_loss": aux if not bad else None, "lr": lr,
                               "grad_norm": gnorm if math.isfinite(gnorm) else None,
                               "tokens_seen": self.tokens_seen, "skipped": bad})
                if consecutive_bad >= cfg.train.max_bad_steps:
                    raise TrainingDiverged(
                        f"stopping at step {self.step}: {consecutive_bad} consecutive steps with NaN/inf loss "
                        f"(train.max_bad_steps={cfg.train.max_bad_steps}); last checkpoint: {self.last_tag or 'none'}; "
                        f"lower optimizer.lr or raise train.grad_clip, then resume")
                if self.step % cfg.logging.every == 0 or self.step == cfg.train.steps:
                    self._log(interval_tokens, time.perf_counter() - interval_start, step_time,
                              loss, ce, aux, lr, gnorm)
                    interval_start, interval_tokens = time.perf_counter(), 0
                if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and self.step < cfg.train.steps:
                    self._validate()
                if reduced[5] > 0:
                    tag = self.save()
                    raise Preempted(self.step, tag, self.preemption.signal_name or "another rank's signal")
                if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0 and self.step < cfg.train.steps:
                    self.save()
            self._validate()
            self.save()
        finally:
            self.preemption.uninstall()
            self.log.close()
            if hasattr(self.train_stream, "close"):
                self.train_stream.close()  # stop data-loader workers
        if self.ctx.is_main:
            print(f"final: step={self.step} loss={self.last_loss:.8g}", flush=True)
        return TrainResult(self.step, self.last_loss, self.tokens_seen, self.bad_steps, self.last_tag)
