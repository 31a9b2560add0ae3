"""One rank of an engine test run (spawned by tests/engine_launch.py, one process per rank).

    python tests/engine_worker.py SPEC.json

SPEC: {"config": {run config dict}, "out": dir, "data": "synthetic" | "real" | "fixed" (every sample is
       spec["fixed_ids"], e.g. a golden input whose official loss is known),
       "nan": {"steps": [..], "rank": r}, "preempt_at": N, "step_sleep": seconds,
       "weights_every_step": bool (out/weights_step<S>_rank<R>.pt after every step),
       "faults": {"poison_at": S (a NaN into one weight after step S, every rank),
                  "die_at": S (SIGKILL every rank in the forward of step S),
                  "stop_at": S (SIGSTOP rank 1 in the forward of step S: a stalled rank),
                  "enospc_at": S (rank 1's save at step S fails: no space left on device)}}
Runs launch/pretrain.py's own build order (run_pretraining) with a test Trainer; a synthetic stream (random A/C/G/T, weight 1 everywhere) makes batches a
pure function of the global sample index, so 1 rank x 2 accumulation and 2 ranks x 1 see the same
samples per optimizer step. At the end each rank writes out/weights_rank<R>.pt (its fp32 module
parameters) and out/result_rank<R>.json; the exit code is the one launch/pretrain.py would use.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from janus_pretrain.config import config_from_dict  # noqa: E402
from janus_pretrain.engine.run import build_data, run_pretraining  # noqa: E402
from janus_pretrain.engine.trainer import Trainer  # noqa: E402


class SyntheticStream:
    """Micro batch k of rank r holds global samples (k * world + r) * B ... + B - 1."""

    def __init__(self, seq_len: int, micro_batch: int, rank: int, world_size: int, seed: int):
        self.seq_len, self.micro_batch, self.rank, self.world, self.seed = seq_len, micro_batch, rank, world_size, seed
        self.k = 0

    fixed: list[int] | None = None  # every sample these ids (data "fixed")

    def sample(self, index: int) -> torch.Tensor:
        if self.fixed is not None:
            return torch.tensor(self.fixed)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return torch.randint(7, 11, (self.seq_len,), generator=gen)  # A/C/G/T ids

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        first = (self.k * self.world + self.rank) * self.micro_batch
        ids = torch.stack([self.sample(first + i) for i in range(self.micro_batch)])  # (B, L)
        self.k += 1
        return {"input_ids": ids, "loss_weight": torch.ones(ids.shape, dtype=torch.float32),
                "species": torch.zeros(self.micro_batch, dtype=torch.long)}

    def state_dict(self) -> dict:
        return {"k": self.k, "world": self.world}

    @staticmethod
    def global_state(states: list[dict]) -> dict:
        return {"global_k": states[0]["k"] * len(states)}  # micro batches handed out over all ranks

    def load_state_dict(self, state: dict) -> None:
        self.k = state["global_k"] // self.world if "global_k" in state else state["k"]

    streams = None  # no slots: resumes on another world size continue from the global count
    corrupt_samples = 0

    def close(self) -> None:
        pass


class TestTrainer(Trainer):
    """Injects NaN losses and a preemption request at chosen steps."""

    def __init__(self, *args, nan_steps=(), nan_rank=None, preempt_at=None, step_sleep=0.0, weights_dir=None,
                 faults=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults = faults or {}
        self.nan_steps, self.nan_rank, self.preempt_at = set(nan_steps), nan_rank, preempt_at
        self.step_sleep = step_sleep  # slows steps down so a test can signal mid-run
        self.weights_dir = weights_dir  # where to dump this rank's weights after every step, if set

    def train_step(self, batches):
        result = super().train_step(batches)
        if self.weights_dir is not None:
            weights = {n: p.detach().float().cpu().clone() for n, p in self.engine.module.named_parameters()}
            torch.save(weights, Path(self.weights_dir) / f"weights_step{self.step + 1}_rank{self.ctx.rank}.pt")
        if self.faults.get("poison_at") == self.step + 1:
            with torch.no_grad():
                next(self.engine.module.parameters()).fill_(float("nan"))
        return result

    def save(self):
        if self.faults.get("enospc_at") != self.step or self.ctx.rank != 1:
            return super().save()
        import errno

        import janus_pretrain.checkpoint.training_state as state
        plain = state.atomic_torch_save

        def full_disk(obj, path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        state.atomic_torch_save = full_disk
        try:
            return super().save()
        finally:
            state.atomic_torch_save = plain

    def forward(self, batch):
        out = super().forward(batch)
        time.sleep(self.step_sleep)
        upcoming = self.step + 1
        if self.faults.get("die_at") == upcoming:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.faults.get("stop_at") == upcoming and self.ctx.rank == 1:
            os.kill(os.getpid(), signal.SIGSTOP)
        if upcoming in self.nan_steps and self.nan_rank in (None, self.ctx.rank):
            out.loss = out.loss * float("nan")
        if self.preempt_at == upcoming and self.ctx.rank == 0:  # only rank 0: the others must follow
            self.preemption.request("test")
        return out


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    config = config_from_dict(spec["config"], where=spec_path)
    real = spec.get("data") == "real"
    nan = spec.get("nan", {})

    def synthetic(config, ctx, micro_batch):
        stream = SyntheticStream(config.data.seq_len, micro_batch, ctx.data_rank, ctx.data_ranks, config.train.seed)
        stream.fixed = spec.get("fixed_ids") if spec.get("data") == "fixed" else None
        return stream, None, []

    class Configured(TestTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs, nan_steps=nan.get("steps", ()), nan_rank=nan.get("rank"),
                             preempt_at=spec.get("preempt_at"), step_sleep=spec.get("step_sleep", 0.0),
                             weights_dir=out if spec.get("weights_every_step") else None,
                             faults=spec.get("faults"))

    def collect(trainer, code):
        rank = trainer.ctx.rank
        weights = {n: p.detach().float().cpu().clone() for n, p in trainer.engine.module.named_parameters()}
        torch.save(weights, out / f"weights_rank{rank}.pt")
        (out / f"result_rank{rank}.json").write_text(json.dumps(
            {"step": trainer.step, "bad_steps": trainer.bad_steps, "ep_rank": trainer.ctx.ep_rank, "code": code,
             "resumed_tag": trainer.resumed_tag}))

    return run_pretraining(config, data=build_data if real else synthetic, trainer_class=Configured,
                           check_data_files=real, on_exit=collect)


if __name__ == "__main__":
    from janus_pretrain.engine.distributed import exit_after

    exit_after(lambda: main(sys.argv[1]))  # leaves like launch/pretrain.py does
