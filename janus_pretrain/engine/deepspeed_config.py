"""The DeepSpeed JSON, derived from the run config and its batch plan (never kept beside it).

The JSON is written next to the checkpoints (<run dir>/deepspeed_config.json) so a run documents
exactly what DeepSpeed was told. `deepspeed:` in the YAML is merged in last, but may not change a
value derived here (batch sizes, clipping, ZeRO stage, precision): those have their own keys.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from janus_pretrain.atomic_io import atomic_write_text
from janus_pretrain.config import BatchPlan, ConfigError, RunConfig


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
        # DeepSpeed (given no mpu) counts every rank as data parallel and checks micro x accumulation
        # x world; under context parallelism a CP group's ranks share their samples, so its count
        # is cp_size times ours (it only checks and logs it)
        "train_batch_size": plan.samples_per_step * plan.cp_size,
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
