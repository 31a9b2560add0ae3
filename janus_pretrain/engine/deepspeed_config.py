"""Batch arithmetic and the DeepSpeed JSON, derived from the run config (never kept beside it).

The JSON is written next to the checkpoints (<run dir>/deepspeed_config.json) so a run documents
exactly what DeepSpeed was told. `deepspeed:` in the YAML is merged in last, but may not change a
value derived here (batch sizes, clipping, ZeRO stage, precision): those have their own keys.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from janus_pretrain.atomic_io import atomic_write_text
from janus_pretrain.config import ConfigError, RunConfig


@dataclass(frozen=True)
class BatchPlan:
    micro_batch: int  # samples per rank per forward
    grad_accum: int  # micro batches per optimizer step
    world_size: int  # data-parallel ranks
    seq_len: int  # tokens per sample

    @property
    def samples_per_step(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def tokens_per_step(self) -> int:
        return self.samples_per_step * self.seq_len


def batch_plan(config: RunConfig, world_size: int) -> BatchPlan:
    """Resolve gradient accumulation from train.global_batch_tokens, or check the two agree."""
    train, seq_len, where = config.train, config.data.seq_len, config.source or "config"
    if train.micro_batch < 1:
        raise ConfigError(f"{where}: train.micro_batch must be >= 1 (got {train.micro_batch})")
    if train.grad_accum < 0 or train.global_batch_tokens < 0:
        raise ConfigError(f"{where}: train.grad_accum and train.global_batch_tokens must be >= 0")
    per_micro_step = train.micro_batch * seq_len * world_size  # tokens of one micro step on all ranks
    if train.global_batch_tokens:
        accum, rest = divmod(train.global_batch_tokens, per_micro_step)
        if rest or accum < 1:
            raise ConfigError(
                f"{where}: train.global_batch_tokens={train.global_batch_tokens} is not a multiple of "
                f"micro_batch x seq_len x world_size = {train.micro_batch} x {seq_len} x {world_size} = "
                f"{per_micro_step}; change train.global_batch_tokens, train.micro_batch or the number of ranks")
        if train.grad_accum and train.grad_accum != accum:
            raise ConfigError(
                f"{where}: train.grad_accum={train.grad_accum} disagrees with train.global_batch_tokens="
                f"{train.global_batch_tokens} (which needs {accum} at micro_batch {train.micro_batch}, seq_len "
                f"{seq_len}, {world_size} ranks); set one of them to 0")
    else:
        accum = train.grad_accum or 1
    return BatchPlan(train.micro_batch, accum, world_size, seq_len)


def _merge(base: dict, extra: dict, path: str, where: str) -> dict:
    for key, value in extra.items():
        full = f"{path}.{key}" if path else key
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, full, where)
        elif key in base and base[key] != value:
            raise ConfigError(f"{where}: deepspeed.{full}={value!r} conflicts with the value {base[key]!r} derived "
                              f"from the run config; set it through its own key (train.*, parallel.*)")
        else:
            base[key] = copy.deepcopy(value)
    return base


def deepspeed_config(config: RunConfig, plan: BatchPlan) -> dict:
    derived = {
        "train_batch_size": plan.samples_per_step,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "gradient_clipping": config.train.grad_clip,
        "zero_optimization": {
            "stage": config.parallel.zero_stage,
            # MoE under ZeRO-2 requires both (DeepSpeed asserts); they are its defaults anyway
            "contiguous_gradients": True,
            "reduce_scatter": True,
        },
        "bf16": {
            "enabled": config.train.precision == "bf16",
            # a NaN/inf gradient skips the step (fp32 skips on a non-finite grad norm by itself)
            "check_grad_overflow": True,
        },
        # torch.optim.AdamW is passed in as client optimizer (see optim.py)
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # our own progress line replaces DeepSpeed's
        "wall_clock_breakdown": False,
    }
    return _merge(derived, config.deepspeed, "", config.source or "config")


def write_json(obj: dict, path: str | Path) -> None:
    """Write atomically: a temporary name, then rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
