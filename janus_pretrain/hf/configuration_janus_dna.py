"""transformers' view of an export's config.json (AutoConfig with trust_remote_code).

The export's own keys stay where janus_pretrain.export reads them: `model` (the ModelConfig as a
dict), `format`, `tokenizer_version`, `weights_dtype`, `run`. So one config.json serves both
loaders, and `save_pretrained` writes a directory that janus_pretrain.export.load_pretrained reads.
This file is copied into every export (janus_pretrain/hf/remote_code.py): keep its imports to
janus_pretrain modules that need only torch, numpy and pyyaml.
"""
from __future__ import annotations

from transformers import PretrainedConfig

from janus_pretrain.config_schema import to_dict
from janus_pretrain.model_config import ModelConfig, model_config_from_dict
from janus_pretrain.export_layout import CONFIG_NAME, EXPORT_FORMAT, MODEL_TYPE
from janus_pretrain.tokenizer import TOKENIZER_VERSION


class JanusDNAConfig(PretrainedConfig):
    """`model`: the ModelConfig fields (missing ones take their defaults; unknown ones are an
    error naming the key). Everything else is transformers' own or the export's run record."""

    model_type = MODEL_TYPE

    def __init__(self, model: dict | None = None, **kwargs):
        self.model = to_dict(model_config_from_dict(dict(model or {}), f"{MODEL_TYPE} {CONFIG_NAME}"))
        kwargs.setdefault("format", EXPORT_FORMAT)
        kwargs.setdefault("tokenizer_version", TOKENIZER_VERSION)
        kwargs.setdefault("weights_dtype", "float32")
        if kwargs["tokenizer_version"] != TOKENIZER_VERSION:
            raise ValueError(f"{CONFIG_NAME}: tokenizer_version {kwargs['tokenizer_version']!r} differs from this "
                             f"code's {TOKENIZER_VERSION!r}; token ids would not match: load it with the code "
                             f"exported beside it")
        super().__init__(**kwargs)

    def model_config(self) -> ModelConfig:
        return model_config_from_dict(dict(self.model), f"{MODEL_TYPE} {CONFIG_NAME}")

    @property
    def hidden_size(self) -> int:  # the name pooling and probing tools look for
        return self.model["d_model"]

    @property
    def num_hidden_layers(self) -> int:
        return self.model["n_layers"]
