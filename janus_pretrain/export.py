"""Standalone model directories: config.json + model.safetensors + README.md, and the code that
loads them with Hugging Face transformers (janus_pretrain/hf/, file list in export_layout.py).

An export loads with torch, safetensors and this package only, or with transformers and no
janus_pretrain at all; DeepSpeed is never imported here (launch/convert_checkpoint.py builds
exports from DeepSpeed checkpoints).

  EXPORT_DIR/config.json        {"format": ..., "tokenizer_version": ..., "model": ModelConfig (its
                                 "objective" says what the logits mean; absent = janus),
                                 "weights_dtype": "float32", "run": {...training summary...}}
  EXPORT_DIR/model.safetensors  full state_dict of JanusForPretraining, every expert included
  EXPORT_DIR/README.md          model card: architecture, training run, data, how to load
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from janus_pretrain.atomic_io import atomic_write_text, read_json
from janus_pretrain.config_schema import to_dict
from janus_pretrain.model_config import ModelConfig, model_config_from_dict
from janus_pretrain.digests import file_digest
from janus_pretrain.export_layout import CARD_NAME, CONFIG_NAME, EXPORT_FORMAT, WEIGHTS_NAME
from janus_pretrain.hf.remote_code import write_remote_code
from janus_pretrain.model import JanusForPretraining, JanusModel
from janus_pretrain.tokenizer import TOKENIZER_VERSION


class ExportError(ValueError):
    """An export directory that cannot be written or read; the message says which file and why."""


def full_state_dict(model: JanusForPretraining) -> dict[str, torch.Tensor]:
    """state_dict of a model holding every expert (refuses an expert-parallel shard)."""
    for moe in model.moe_layers():
        if moe.num_local != moe.num_experts:
            raise ExportError(f"{moe.layer_name} holds experts {moe.first_local}..{moe.first_local + moe.num_local - 1} "
                              f"of {moe.num_experts} (expert-parallel shard): export from a DeepSpeed checkpoint "
                              f"with janus convert --checkpoint DIR --out EXPORT instead")
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def expected_shapes(model_config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a full (all experts) model has; built on the meta device."""
    with torch.device("meta"):
        model = JanusForPretraining(model_config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_state_matches(state: dict[str, torch.Tensor], model_config: ModelConfig) -> None:
    expected = expected_shapes(model_config)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ExportError(f"weights do not match the model config: missing {missing[:5]} "
                          f"({len(missing)} in all), unexpected {extra[:5]} ({len(extra)} in all)")
    wrong = [f"{k}: {tuple(state[k].shape)} != {shape}" for k, shape in expected.items() if tuple(state[k].shape) != shape]
    if wrong:
        raise ExportError(f"weights do not match the model config, shapes differ: {wrong[:5]}")


def _model_card(model_config: ModelConfig, state: dict[str, torch.Tensor], run: dict[str, Any],
                weights_dtype: str) -> str:
    total = sum(t.numel() for t in state.values())
    logits_mean = {"janus": "base p given both sides, never p itself",
                   "mlm": "base p given the whole input (mask p with [MASK] id 3 to predict it)",
                   "clm": "base p+1 given bases 0..p"}[model_config.objective]
    lines = ["# Janus DNA model export", "",
             "Bidirectional hybrid Mamba + attention + MoE DNA model (JanusDNA-style), exported by janus-pretrain.", "",
             f"- objective: {model_config.objective} (docs/objectives.md)",
             f"- parameters: {total:,} (all experts)",
             f"- weights: stored as {weights_dtype}; source: {run.get('weights_source', 'model state')}",
             f"- tokenizer: {TOKENIZER_VERSION} (A7 C8 G9 T10 N11, vocabulary {model_config.vocab_size})",
             f"- d_model {model_config.d_model}, {model_config.n_layers} layers, "
             f"{model_config.num_experts} experts top-{model_config.top_k}", "",
             "```", model_config.describe_layers(), "```", ""]
    if run:
        lines += ["## Training run", ""]
        for key in ("checkpoint", "tag", "step", "tokens_seen", "ep_size", "dp_world_size", "zero_stage",
                    "train_precision", "config_source"):
            if key in run:
                lines.append(f"- {key}: {run[key]}")
        if run.get("data"):
            lines += ["", "Data:", "", "```", json.dumps(run["data"], indent=2, sort_keys=True), "```"]
        if run.get("train_config"):
            lines += ["", "Training config:", "", "```", json.dumps(run["train_config"], indent=2, sort_keys=True), "```"]
        lines.append("")
    lines += ["## Load", "", "```python", "from janus_pretrain.export import load_pretrained",
              "model = load_pretrained('EXPORT_DIR')      # JanusForPretraining, eval mode, no DeepSpeed needed",
              f"logits = model(input_ids).logits          # (B, L, vocab): {logits_mean}",
              "states = model.backbone(input_ids).hidden_states  # (B, L, D)", "```", "",
              "With Hugging Face transformers (janus_pretrain not needed; the code is in this directory):", "",
              "```python", "from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer",
              "tokenizer = AutoTokenizer.from_pretrained('EXPORT_DIR', trust_remote_code=True)",
              "input_ids = tokenizer(['ACGTACGT'], return_tensors='pt')['input_ids']",
              "logits = AutoModelForMaskedLM.from_pretrained('EXPORT_DIR', trust_remote_code=True)(input_ids).logits",
              "states = AutoModel.from_pretrained('EXPORT_DIR', trust_remote_code=True)(input_ids).last_hidden_state",
              "```", ""]
    return "\n".join(lines)


def write_export(state: dict[str, torch.Tensor], model_config: ModelConfig, out_dir: str | Path,
                 run: dict[str, Any] | None = None, overwrite: bool = False,
                 weights_dtype: str = "float32") -> Path:
    """Write a complete export atomically: built in a sibling temp dir, then renamed into place."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ExportError(f"output directory {out_dir} already exists; pass overwrite (--overwrite) to replace it")
    check_state_matches(state, model_config)
    run = dict(run or {})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    config = {"format": EXPORT_FORMAT, "tokenizer_version": TOKENIZER_VERSION, "model": to_dict(model_config),
              "weights_dtype": weights_dtype, "run": run}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "export_format": EXPORT_FORMAT})
        config["weights_sha256"] = file_digest(tmp / WEIGHTS_NAME)  # checked by load_pretrained
        config.update(write_remote_code(tmp, model_config.tokenizer))  # transformers' entry points and the code they run
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / CARD_NAME).write_text(_model_card(model_config, tensors, run, weights_dtype))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def save_pretrained(model: JanusForPretraining, out_dir: str | Path, run_info: dict[str, Any] | None = None,
                    overwrite: bool = False) -> Path:
    """Export an in-memory model (weights in their current dtype, cast to fp32)."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in full_state_dict(model).items()}
    info = {"weights_source": "in-memory model", **(run_info or {})}
    return write_export(state, model.config, out_dir, info, overwrite)


def read_export_config(export_dir: str | Path) -> dict[str, Any]:
    export_dir = Path(export_dir)
    path = export_dir / CONFIG_NAME
    config = read_json(path, ExportError, f"{export_dir} is not a model export: {CONFIG_NAME} missing (make one "
                                          f"with janus convert --checkpoint RUN/checkpoints --out {export_dir})")
    if config.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: format {config.get('format')!r} is not {EXPORT_FORMAT!r}")
    if config.get("tokenizer_version") != TOKENIZER_VERSION:
        raise ExportError(f"{path}: tokenizer_version {config.get('tokenizer_version')!r} differs from this "
                          f"package's {TOKENIZER_VERSION!r}; token ids would not match")
    return config


def add_remote_code(export_dir: str | Path) -> Path:
    """Make an export written before transformers support (or by an older janus_pretrain) load with
    transformers: this package's code files and tokenizer_config.json are (re)written, config.json
    gains model_type/auto_map; the weights are not touched, so their digest still holds."""
    export_dir = Path(export_dir)
    config = read_export_config(export_dir)
    model = model_config_from_dict(dict(config["model"]), str(export_dir / CONFIG_NAME))  # this code must read it
    config.update(write_remote_code(export_dir, model.tokenizer))
    atomic_write_text(export_dir / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return export_dir


def load_pretrained(export_dir: str | Path, device: str | torch.device = "cpu",
                    kernels: str | None = None, verify: bool = True) -> JanusForPretraining:
    """JanusForPretraining from an export directory, in eval mode; `kernels` overrides model.kernels;
    verify: compare model.safetensors with the sha256 in config.json (exports made before digests
    existed have none and load unverified)."""
    from safetensors.torch import load_file

    export_dir = Path(export_dir)
    config = read_export_config(export_dir)
    raw_model = dict(config["model"])
    if kernels is not None:
        raw_model["kernels"] = kernels
    model_config = model_config_from_dict(raw_model, str(export_dir / CONFIG_NAME))
    weights = export_dir / WEIGHTS_NAME
    if not weights.is_file():
        raise ExportError(f"{weights} missing: the export is incomplete")
    if verify and config.get("weights_sha256") and file_digest(weights) != config["weights_sha256"]:
        raise ExportError(f"{weights}: sha256 differs from the one in {CONFIG_NAME}: the weights were damaged or "
                          f"replaced after export; export again (janus convert)")
    try:
        state = load_file(str(weights), device=str(device))  # safetensors: no pickle, no code
    except Exception as exc:
        raise ExportError(f"{weights}: cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0]}); export "
                          f"again") from None
    try:  # config.json's architecture against the tensors, before building (an edited d_model)
        check_state_matches(state, model_config)
    except ExportError as exc:
        raise ExportError(f"{weights} does not match {export_dir / CONFIG_NAME} (edited?): {exc}; export "
                          f"again") from None
    model = JanusForPretraining(model_config).to(device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(f"{weights} does not match {CONFIG_NAME}: missing {sorted(missing)[:5]}, "
                          f"unexpected {sorted(unexpected)[:5]}")
    # an import of a fine-tuned official checkpoint has a backbone but no trained LM head (run.lm_head)
    model.lm_head_trained = config.get("run", {}).get("lm_head") != "absent"
    return model.eval()


def load_backbone(export_dir: str | Path, device: str | torch.device = "cpu",
                  kernels: str | None = None, verify: bool = True) -> JanusModel:
    """The backbone only ((B, L) ids -> (B, L, D) states), for finetuning and embeddings."""
    return load_pretrained(export_dir, device, kernels, verify).backbone
