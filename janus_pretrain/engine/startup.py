"""Checks run before any heavy work (process group, shm op build, model): one clear message each.

Only the world size is needed, which the launcher environment gives us before init.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from janus_pretrain.config import ConfigError, RunConfig
from janus_pretrain.engine.deepspeed_config import BatchPlan, batch_plan


def check_parallel(config: RunConfig, world_size: int) -> None:
    where, ep, model = config.source or "config", config.parallel.ep_size, config.model
    has_moe = any(ffn == "moe" for _, ffn in model.layer_map())
    if ep < 1:
        raise ConfigError(f"{where}: parallel.ep_size must be >= 1 (got {ep})")
    if world_size % ep:
        raise ConfigError(f"{where}: parallel.ep_size={ep} does not divide the world size {world_size} "
                          f"(ranks); use an ep_size that divides the number of ranks")
    if has_moe and model.num_experts % ep:
        raise ConfigError(f"{where}: parallel.ep_size={ep} does not divide model.num_experts={model.num_experts}")
    if ep > 1 and not has_moe:
        raise ConfigError(f"{where}: parallel.ep_size={ep} but the model has no MoE layers "
                          f"(model.expert_layer_period=0); set parallel.ep_size=1")
    stage = config.parallel.zero_stage
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{where}: parallel.zero_stage must be 0, 1, 2 or 3 (got {stage})")
    if has_moe and stage not in (1, 2):
        # ZeRO-0 does not reduce the expert grad norm across expert-parallel ranks (clipping then
        # differs from ep_size 1) and ZeRO-3 rejects non-AutoEP MoE layers
        raise ConfigError(f"{where}: parallel.zero_stage={stage} is not supported with MoE layers; use 1 or 2")


def check_data(config: RunConfig) -> None:
    """The manifest exists and its windows are at least data.seq_len long."""
    from janus_pretrain.data import ManifestError, read_manifest

    where, manifest = config.source or "config", config.data.manifest
    if not manifest:
        raise ConfigError(f"{where}: data.manifest is not set; shard genomes with data_prep/shard_genomes.py "
                          f"and point data.manifest at the manifest.json it writes")
    if not Path(manifest).is_file():
        raise ConfigError(f"{where}: data.manifest {manifest} does not exist; create it with "
                          f"data_prep/shard_genomes.py --out <dir> (see docs/training.md)")
    try:
        window = read_manifest(manifest)["window_bp"]
    except ManifestError as exc:
        raise ConfigError(f"{where}: data.manifest: {exc}") from None
    if config.data.seq_len > window:
        raise ConfigError(f"{where}: data.seq_len={config.data.seq_len} is longer than the shard windows "
                          f"({window} bp in {manifest}); reshard with --window-bp >= {config.data.seq_len} "
                          f"or lower data.seq_len")


def check_checkpoint_dir(config: RunConfig) -> None:
    """checkpoint.dir (and the run directory beside it) can be created and written."""
    directory = Path(config.checkpoint.dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{config.source or 'config'}: checkpoint.dir {directory} is not writable "
                          f"({exc.strerror or exc}); choose another checkpoint.dir") from None
    if config.checkpoint.keep < 1:
        raise ConfigError(f"{config.source or 'config'}: checkpoint.keep must be >= 1 (got {config.checkpoint.keep})")


def check_run(config: RunConfig) -> None:
    where, train = config.source or "config", config.train
    if train.steps < 1:
        raise ConfigError(f"{where}: train.steps must be >= 1 (got {train.steps})")
    if train.max_bad_steps < 1:
        raise ConfigError(f"{where}: train.max_bad_steps must be >= 1 (got {train.max_bad_steps})")
    if not 0 <= config.schedule.warmup_fraction < 1:
        raise ConfigError(f"{where}: schedule.warmup_fraction must be in [0, 1) (got {config.schedule.warmup_fraction})")
    if config.checkpoint.resume not in ("auto", "none") and "/" in config.checkpoint.resume:
        raise ConfigError(f"{where}: checkpoint.resume must be auto, none or a tag name inside checkpoint.dir")


def startup_checks(config: RunConfig, world_size: int, check_data_files: bool = True) -> BatchPlan:
    """All checks in the order a user would fix them; returns the resolved batch plan."""
    check_run(config)
    check_parallel(config, world_size)
    plan = batch_plan(config, world_size)
    if check_data_files:
        check_data(config)
    check_checkpoint_dir(config)  # on every rank: each writes its own checkpoint files
    return plan
