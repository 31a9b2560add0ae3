"""Checks of the environment a run needs, before any heavy work (process group, shm op build,
model): one clear message each. The config's own values were checked when it was loaded
(config.py); what depends on the world size is checked here through RunConfig.check_world_size.
Only the world size is needed, which the launcher environment gives us before init.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from janus_pretrain.config import BatchPlan, ConfigError, RunConfig
from janus_pretrain.engine.logging_backends import check_available


def check_data(config: RunConfig) -> None:
    """The manifest exists, names every species of data.mixture, and its windows are at least data.seq_len long."""
    from janus_pretrain.data import ManifestError, mixture_weights, read_manifest

    where, manifest = config.source or "config", config.data.manifest
    if not manifest:
        raise ConfigError(f"{where}: data.manifest is not set; shard genomes with janus shard "
                          f"and point data.manifest at the manifest.json it writes")
    if Path(manifest).is_dir():
        inside = Path(manifest) / "manifest.json"
        hint = f"set data.manifest to {inside}" if inside.is_file() else "no manifest.json is inside either"
        raise ConfigError(f"{where}: data.manifest {manifest} is a directory; point it at the manifest.json "
                          f"inside ({hint})")
    if not Path(manifest).is_file():
        raise ConfigError(f"{where}: data.manifest {manifest} does not exist; create it with "
                          f"janus shard --out <dir> (see docs/data.md)")
    try:
        shards = read_manifest(manifest)
        mixture_weights(shards, config.data.mixture)  # unknown species: now, not after the process group started
    except ManifestError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    window = shards["window_bp"]
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


def startup_checks(config: RunConfig, world_size: int, check_data_files: bool = True) -> BatchPlan:
    """All checks in the order a user would fix them; returns the resolved batch plan."""
    config.validate()  # again: a config built in code may have been changed since it was loaded
    plan = config.check_world_size(world_size)
    check_available(config.logging, config.source or "config")  # e.g. wandb chosen but not installed
    if check_data_files:
        check_data(config)
    check_checkpoint_dir(config)  # on every rank: each writes its own checkpoint files
    return plan
