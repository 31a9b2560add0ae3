"""`janus pretrain --dry-run`: everything a run would decide before its first step, without
training or starting DeepSpeed: the resolved config (YAML that loads back as a run config), the
layer map, parameter counts, the batch plan for a rank count, the memory model's prediction and
whether the data is ready."""
from __future__ import annotations

from typing import Iterator

from janus_pretrain.config import ConfigError, RunConfig, to_dict


def dry_run_lines(config: RunConfig, ranks: int) -> Iterator[str]:
    """The plan, line by line; ConfigError (after the lines that do not depend on it) when the
    config cannot run on `ranks` ranks. Missing data is reported, not raised: a plan is worth
    seeing before the data exists."""
    import torch
    import yaml

    from janus_pretrain.engine.run import parameter_line
    from janus_pretrain.engine.startup import check_data
    from janus_pretrain.memory import report

    yield "# resolved config (" + (config.source or "<config>") + ")"
    resolved = {k: v for k, v in to_dict(config).items() if k != "source"}  # loads back as a run YAML
    yield yaml.safe_dump(resolved, sort_keys=False).rstrip()
    yield config.model.describe_layers()
    yield parameter_line(config)
    plan = config.check_world_size(ranks)
    yield (f"batch: {plan.micro_batch} x {plan.seq_len} bp x {plan.grad_accum} accumulation x {plan.ranks_text} "
           f"= {plan.tokens_per_step:,} tokens per optimizer step; {config.train.steps:,} steps = "
           f"{plan.tokens_per_step * config.train.steps:,} tokens")
    backend = "cuda" if torch.cuda.is_available() else "reference"
    yield (f"memory ({'this GPU' if backend == 'cuda' else 'no GPU here: CPU reference kernels'}; "
           f"`janus memory --backend` for others):")
    yield report(config, plan.seq_len, backend, ranks, 80.0, config.source or "<config>")
    try:
        check_data(config)
        yield "data: manifest found, windows long enough"
    except ConfigError as exc:
        yield f"data: NOT READY: {exc}"
    yield "dry run: nothing trained, DeepSpeed not started"
