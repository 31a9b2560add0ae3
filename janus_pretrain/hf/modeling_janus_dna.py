"""transformers' classes over the one Janus model (janus_pretrain.model), for exports loaded with
AutoModel / AutoModelForMaskedLM.from_pretrained(EXPORT_DIR, trust_remote_code=True).

  JanusDNAModel        the backbone: input_ids (B, L) -> last_hidden_state (B, L, D), the states
                       janus_pretrain's JanusModel computes (janus: state p never saw base p)
  JanusDNAForMaskedLM  backbone + head: logits (B, L, vocab) of JanusForPretraining (what they
                       mean depends on model.objective: see the export's README.md); with labels,
                       the pretraining loss

Both build janus_pretrain's own modules and register their children under the names the export's
state dict uses (backbone.*, mlp.*, lm_head.*), so model.safetensors loads unchanged and
save_pretrained writes a file our loader reads. The forward passes are the package's own: the
JanusForPretraining that owns the modules is kept outside the module tree, like the shared Mamba
projections in model/mamba.py, so its weights are not listed twice.
This file is copied into every export (janus_pretrain/hf/remote_code.py).
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from janus_pretrain.digests import file_digest
from janus_pretrain.export_layout import CONFIG_NAME, WEIGHTS_NAME
from janus_pretrain.hf.configuration_janus_dna import JanusDNAConfig
from janus_pretrain.model.janus import JanusForPretraining, JanusModel


@dataclass
class JanusDNAModelOutput(ModelOutput):
    last_hidden_state: torch.FloatTensor | None = None  # (B, L, D) read-out states, final norm applied
    aux_loss: torch.FloatTensor | None = None  # MoE load-balancing loss (0 without MoE)


@dataclass
class JanusDNAMaskedLMOutput(ModelOutput):
    loss: torch.FloatTensor | None = None  # ce_loss + router_aux_loss_coef * aux_loss (with labels)
    logits: torch.FloatTensor | None = None  # (B, L, vocab); None when model.loss_chunk chunked the loss
    ce_loss: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None


def _check_no_padding(attention_mask: torch.Tensor | None) -> None:
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError("attention_mask has padded positions, but the Janus model has no padding mask (both "
                         "directions would read the padding): batch sequences of one length, or run them one by one")


class JanusDNAPreTrainedModel(PreTrainedModel):
    config_class = JanusDNAConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    _no_split_modules = ["JanusLayer", "FusionBlock"]

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Our modules initialise themselves when built (model/*.py); from_pretrained loads every weight."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' load, with the checks janus_pretrain.export.load_pretrained makes: a local
        export's model.safetensors must have the sha256 its config.json records (damaged or
        replaced weights are refused), and every loaded weight must be finite."""
        directory = Path(str(pretrained_model_name_or_path))
        weights, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
        if weights.is_file() and config_path.is_file():
            recorded = json.loads(config_path.read_text()).get("weights_sha256")
            if recorded and file_digest(weights) != recorded:
                raise ValueError(f"{weights}: sha256 differs from the one in {CONFIG_NAME}: the weights were damaged "
                                 f"or replaced after export; export again (janus convert)")
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True: (model, info)
        bad = [name for name, tensor in model.state_dict().items()
               if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if bad:
            raise ValueError(f"{pretrained_model_name_or_path}: {len(bad)} weights hold NaN/inf (e.g. {bad[:3]}); "
                             f"the export is damaged: export again (janus convert)")
        return loaded

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "_core"):  # outside the module tree, see the module docstring
            self._core.train(mode)
        return self

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save, then config.json records the new weights' digest and dtype, so
        janus_pretrain.export.load_pretrained verifies and loads the directory. transformers copies
        the code of classes it loaded from an export; for the package's own classes the export's
        build step writes it, so the directory loads where janus_pretrain is not installed."""
        super().save_pretrained(save_directory, *args, **kwargs)
        config_path, weights = Path(save_directory) / CONFIG_NAME, Path(save_directory) / WEIGHTS_NAME
        config = json.loads(config_path.read_text())
        if __name__.startswith("janus_pretrain."):  # never true in an export's copy, which lacks the build step:
            # imported by name so that the copy does not carry it
            config.update(importlib.import_module("janus_pretrain.hf.remote_code").write_remote_code(
                save_directory, self.config.model_config().tokenizer))
        config.pop("weights_sha256", None)
        if weights.is_file():  # one file (not sharded): what our loader reads
            config["weights_sha256"] = file_digest(weights)
        config["weights_dtype"] = str(next(self.parameters()).dtype).removeprefix("torch.")
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


class JanusDNAModel(JanusDNAPreTrainedModel):
    """Backbone: input_ids (B, L) -> last_hidden_state (B, L, D)."""

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\.", r"^mlp\."]  # the head, when loaded from a full export

    def __init__(self, config: JanusDNAConfig, core: JanusModel | None = None):
        super().__init__(config)
        core = core if core is not None else JanusModel(config.model_config())
        object.__setattr__(self, "_core", core)
        for name, module in core.named_children():
            self.add_module(name, module)  # embedding, layers, fusion, norm_f: the export's backbone.* names
        self.post_init()

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self._core.embedding

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                return_dict: bool | None = None) -> JanusDNAModelOutput | tuple:
        _check_no_padding(attention_mask)
        out = self._core(input_ids)
        result = JanusDNAModelOutput(last_hidden_state=out.hidden_states, aux_loss=out.aux_loss)
        return result if return_dict is not False else result.to_tuple()


class JanusDNAForMaskedLM(JanusDNAPreTrainedModel):
    """JanusForPretraining: logits (B, L, vocab); with labels (and optional loss_weight) the loss."""

    def __init__(self, config: JanusDNAConfig):
        super().__init__(config)
        core = JanusForPretraining(config.model_config())
        object.__setattr__(self, "_core", core)
        self.backbone = JanusDNAModel(config, core.backbone)
        if core.mlp is not None:
            self.mlp = core.mlp
        self.lm_head = core.lm_head
        self.post_init()

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self._core.backbone.embedding

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self._core.lm_head

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, loss_weight: torch.Tensor | None = None,
                return_dict: bool | None = None) -> JanusDNAMaskedLMOutput | tuple:
        _check_no_padding(attention_mask)
        out = self._core(input_ids, labels=labels, loss_weight=loss_weight)
        result = JanusDNAMaskedLMOutput(loss=out.loss, logits=out.logits, ce_loss=out.ce_loss, aux_loss=out.aux_loss)
        return result if return_dict is not False else result.to_tuple()
