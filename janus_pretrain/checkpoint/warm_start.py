"""checkpoint.init_from: start a new run (step 0, fresh optimizer, schedule and data) from trained weights.

The source is a model export (`janus convert`) or a training checkpoint directory,
optionally with a tag (`runs/1k/checkpoints:step_00002000`; default: what a resume would pick).
From a checkpoint the fp32 master weights are rebuilt exactly as the converter does, so any
world size, ep_size and ZeRO stage can be the source. The weights go into the model before
DeepSpeed wraps it, so ZeRO's fp32 master copy starts from them (under bf16 training: from
their bf16 rounding, as for a fresh initialisation).

This is the path for a context-length curriculum (1 kbp, then 16 kbp, then 131 kbp: change
data.seq_len and the batch, keep the model section) and for moving a debug run's weights to a
full allocation with a new schedule. A requeued warm-started job resumes its own checkpoints:
init_from is used only when checkpoint.dir has none to resume.
"""
from __future__ import annotations

from pathlib import Path

import torch

from janus_pretrain.checkpoint.layout import CheckpointDir, CheckpointError
from janus_pretrain.config import ConfigError, ModelConfig, RunConfig
from janus_pretrain.model_config import architecture_differences, describe_differences


def split_source(spec: str) -> tuple[Path, str]:
    """'DIR' or 'DIR:TAG' -> (DIR, TAG or 'latest'); a colon inside DIR's existing path is kept."""
    path, _, tag = spec.rpartition(":")
    if path and not Path(spec).exists() and "/" not in tag:
        return Path(path), tag
    return Path(spec), "latest"


def will_resume(config: RunConfig) -> bool:
    """Whether the run continues a checkpoint of its own (then init_from is not used)."""
    if config.checkpoint.resume == "none":
        return False
    if config.checkpoint.resume != "auto":
        return True
    directory = CheckpointDir(config.checkpoint.dir, config.checkpoint.keep)
    return directory.root.is_dir() and bool(directory.complete_tags())


def initial_weights(spec: str, model: ModelConfig, where: str) -> tuple[dict[str, torch.Tensor], str]:
    """Every named fp32 weight (all experts) of the source, after checking it holds `model`'s
    architecture; returns (state, a description for the log)."""
    from janus_pretrain.config import model_config_from_dict
    from janus_pretrain.export import CONFIG_NAME, ExportError, full_state_dict, load_pretrained, read_export_config

    path, tag = split_source(spec)
    if (path / CONFIG_NAME).is_file():
        try:
            theirs = model_config_from_dict(read_export_config(path)["model"], str(path / CONFIG_NAME))
        except (ExportError, ConfigError) as exc:
            raise CheckpointError(f"{where}: checkpoint.init_from={spec}: {exc}") from None
        _check_same_architecture(theirs, model, spec, where)
        try:
            state = full_state_dict(load_pretrained(path, kernels="reference"))
        except ExportError as exc:
            raise CheckpointError(f"{where}: checkpoint.init_from={spec}: {exc}") from None
        return state, f"export {path}"
    if not path.exists():
        raise CheckpointError(f"{where}: checkpoint.init_from={spec}: {path} does not exist (give a model export "
                              f"directory or a checkpoint directory, optionally DIR:TAG)")
    from janus_pretrain.checkpoint.convert import convert_checkpoint

    converted = convert_checkpoint(path, tag)
    _check_same_architecture(converted.model_config, model, spec, where)
    return converted.state, f"checkpoint {converted.run['checkpoint']}/{converted.run['tag']} " \
                            f"(step {converted.run['step']}, {converted.precision_note})"


def _check_same_architecture(theirs: ModelConfig, ours: ModelConfig, spec: str, where: str) -> None:
    changed = architecture_differences(theirs, ours)
    if changed:
        raise CheckpointError(f"{where}: checkpoint.init_from={spec} holds another model: "
                              f"{describe_differences(changed)}; use its model section (only runtime keys such as "
                              f"kernels, activation checkpointing and chunk sizes may differ)")


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy the source weights into `module` (which may hold only some experts: its names carry
    global expert ids); every parameter and buffer of the module must be covered."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint.init_from lacks {len(missing)} tensors of the model, e.g. {missing[:3]}")
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"checkpoint.init_from: shapes differ for {bad[:3]}")
    module.load_state_dict({k: state[k] for k in own}, strict=True)
