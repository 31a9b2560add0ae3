"""Official JanusDNA checkpoint <-> export directory.

  import_official: official .ckpt (pretrained or fine-tuned) -> export that every verb and
      transformers' AutoModel load; the variant is read from the stored config and the weights
      (official/variant.py), the tensors are renamed (official/names.py) and copied bit for bit.
  export_official: export -> OUT/checkpoints/last.ckpt + OUT/model_config.json, the layout the
      official scripts point their pretrained_model_path / model.config_path at.

An export made by import_official carries the source's hyper_parameters (config.json run.janusdna),
so export_official writes them back: official -> export -> official gives the same tensors and config.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from janus_pretrain.atomic_io import atomic_write_text
from janus_pretrain.config_schema import ConfigError
from janus_pretrain.digests import file_digest
from janus_pretrain.export import ExportError, load_pretrained, read_export_config, full_state_dict, write_export
from janus_pretrain.model_config import ModelConfig
from janus_pretrain.official.lightning_file import (OfficialCheckpointError, read_official_checkpoint,
                                                    write_official_checkpoint)
from janus_pretrain.official.names import BACKBONE, HEAD, NameMapError, official_to_ours, ours_to_official
from janus_pretrain.official.variant import VariantError, model_config_from_official, model_section, official_config

OFFICIAL_CHECKPOINT = Path("checkpoints") / "last.ckpt"  # where the official scripts' pretrained_model_path points
OFFICIAL_MODEL_CONFIG = "model_config.json"  # what their model.config_path points at (src/utils/train.py writes it)
CODE_JUNE, CODE_AUGUST = "2025-06-28 (8c333f3, published weights, no final_mlp)", "2025-08-01 (03cd86e, final_mlp)"
HEAD_ABSENT = "absent"  # run.lm_head of an export imported from a fine-tuned checkpoint


class OfficialFormatError(ValueError):
    """Anything that stops a conversion; one line naming the file and the key."""


@dataclass
class Imported:
    export_dir: Path
    model_config: ModelConfig
    fine_tuned: bool  # the source had no lm_head (a downstream checkpoint): the export's head is zero
    checks: list[str] = field(default_factory=list)


def _backbone_names(state: dict[str, torch.Tensor], where: str) -> tuple[dict[str, torch.Tensor], bool]:
    """Tensors renamed so the backbone sits under BACKBONE and the LM head (if any) at HEAD, whatever
    the Lightning module's nesting; returns (renamed, has_head)."""
    anchors = [k for k in state if k.endswith("embed_tokens.weight")]
    if len(anchors) != 1:
        raise OfficialFormatError(f"{where}: expected one '...embed_tokens.weight' tensor, found {len(anchors)}: not a "
                                  f"JanusDNA state_dict")
    prefix = anchors[0][:-len("embed_tokens.weight")]
    heads = [k for k in state if k.endswith("lm_head.weight")]
    renamed = {}
    for name, tensor in state.items():
        if name.startswith(prefix):
            renamed[BACKBONE + name[len(prefix):]] = tensor
        elif name in heads:
            renamed[HEAD] = tensor
        else:
            renamed[name] = tensor
    return renamed, bool(heads)


def import_official(checkpoint: str | Path, out_dir: str | Path, tokenizer: str = "janusdna",
                    overwrite: bool = False) -> Imported:
    path = Path(checkpoint)
    try:
        ckpt = read_official_checkpoint(path)
        model = model_section(ckpt.hyper_parameters, str(path))
        state, has_head = _backbone_names(ckpt.state_dict, str(path))
        config = model_config_from_official(model["config"], state, str(path), tokenizer)
        config.validate(str(path))
        ours = official_to_ours(state, config, str(path), head_optional=True)
    except (OfficialCheckpointError, VariantError, NameMapError, ConfigError) as exc:
        raise OfficialFormatError(str(exc)) from None
    if not has_head:  # fine-tuned: the backbone is the checkpoint's, the LM head did not survive finetuning
        ours["lm_head.weight"] = torch.zeros(config.vocab_size, config.d_model)
    source = {"checkpoint": str(path), "sha256": file_digest(path), "global_step": ckpt.global_step,
              "epoch": ckpt.epoch, "lightning_version": ckpt.lightning_version,
              "code": CODE_AUGUST if config.final_mlp else CODE_JUNE, "model_name": model.get("_name_"),
              "hyper_parameters": ckpt.hyper_parameters}
    run = {"weights_source": "official JanusDNA checkpoint (janus convert --from janusdna)", "janusdna": source,
           "lm_head": "trained" if has_head else HEAD_ABSENT}
    out = write_export({k: v.float().contiguous() for k, v in ours.items()}, config, out_dir, run, overwrite)
    checks = [f"{len(state) - sum(n.endswith('num_tokens.count') for n in state)} official tensors mapped onto "
              f"{len(ours)} (q/k/v concatenated, tied Mamba projections checked equal)",
              f"variant: d_model {config.d_model}, {config.n_layers} layers, "
              f"{'mid attention' if config.attn_layer_period else 'no mid attention'}, "
              f"{'final MLP' if config.final_mlp else 'no final MLP'}, fusion scale 1/sqrt({config.fusion_scale_dim or config.head_dim})"]
    return Imported(out, config, not has_head, checks)


def export_official(export_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """OUT/checkpoints/last.ckpt + OUT/model_config.json from an export (every expert, fp32 weights)."""
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    target = out_dir / OFFICIAL_CHECKPOINT
    if target.exists() and not overwrite:
        raise OfficialFormatError(f"{target} already exists; pass --overwrite to replace it")
    try:
        meta = read_export_config(export_dir)
        model = load_pretrained(export_dir)
        config = model.config
        arguments = official_config(config, str(export_dir))
    except (ExportError, VariantError, ConfigError) as exc:
        raise OfficialFormatError(str(exc)) from None
    if meta.get("run", {}).get("lm_head") == HEAD_ABSENT:
        raise OfficialFormatError(f"{export_dir}: its LM head is not trained (imported from a fine-tuned checkpoint); an "
                                  f"official pretrained checkpoint needs one")
    state = ours_to_official(full_state_dict(model), config)
    source: dict[str, Any] = meta.get("run", {}).get("janusdna") or {}
    # an imported export writes back the hyper_parameters it came with (its weights are the source's:
    # config.json's digest says so); any other export gets the model section the official scripts build
    hparams = source.get("hyper_parameters") or {"model": {"_name_": "janusdna_lm", "config": arguments}}
    write_official_checkpoint(target, state, hparams, global_step=source.get("global_step") or 0,
                              epoch=source.get("epoch") or 0)
    model_config = {k: v for k, v in hparams["model"].items() if not k.startswith("_") or k == "config_path"}
    atomic_write_text(out_dir / OFFICIAL_MODEL_CONFIG, json.dumps(model_config, indent=4) + "\n")
    return target
