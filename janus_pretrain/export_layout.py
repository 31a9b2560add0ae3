"""The export directory's on-disk facts: file names, format version, Hugging Face names.

Imports nothing (not torch, not transformers), so the export writer, our loader and the Hugging
Face classes copied into every export (janus_pretrain/hf/) read the same constants.

  EXPORT_DIR/config.json          our keys (format, tokenizer_version, model, weights_dtype, run,
                                  weights_sha256) + transformers' (model_type, architectures,
                                  auto_map, remote_code: flat module -> package module it came from)
  EXPORT_DIR/model.safetensors    full JanusForPretraining state dict
  EXPORT_DIR/README.md            model card
  EXPORT_DIR/tokenizer_config.json  AutoTokenizer's entry point
  EXPORT_DIR/*.py                 the modeling, configuration and tokenizer code (flat copies of
                                  janus_pretrain modules, imports made relative)
"""
from __future__ import annotations

EXPORT_FORMAT = "janus-pretrain-export-v1"  # HF files were added in place: v1 exports without them still load
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"

MODEL_TYPE = "janus_dna"  # transformers' model_type of every export
CONFIG_MODULE, MODELING_MODULE, TOKENIZER_MODULE = "configuration_janus_dna", "modeling_janus_dna", "tokenization_janus_dna"
CONFIG_CLASS, BACKBONE_CLASS, HEAD_CLASS, TOKENIZER_CLASS = (
    "JanusDNAConfig", "JanusDNAModel", "JanusDNAForMaskedLM", "JanusDNATokenizer")

# transformers' Auto* class -> "module.Class" inside the export (tokenizer: [slow, fast])
AUTO_MAP = {
    "AutoConfig": f"{CONFIG_MODULE}.{CONFIG_CLASS}",
    "AutoModel": f"{MODELING_MODULE}.{BACKBONE_CLASS}",
    "AutoModelForMaskedLM": f"{MODELING_MODULE}.{HEAD_CLASS}",
    "AutoModelForPreTraining": f"{MODELING_MODULE}.{HEAD_CLASS}",
    "AutoTokenizer": [f"{TOKENIZER_MODULE}.{TOKENIZER_CLASS}", None],
}
