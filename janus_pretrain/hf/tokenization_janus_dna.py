"""AutoTokenizer for exports: janus_pretrain.tokenizer behind transformers' PreTrainedTokenizer.

Character level, Caduceus/JanusDNA ids ([CLS]0 [SEP]1 [BOS]2 [MASK]3 [PAD]4 [RESERVED]5 [UNK]6
A7 C8 G9 T10 N11), letters mapped as the model's tokenizer mode says (`mode` in
tokenizer_config.json, model.tokenizer: janus = lower case to the same ids, IUPAC codes to N), and
no special tokens added: `tokenizer(seq)["input_ids"]` equals `janus_pretrain.tokenizer.encode(seq, mode)`. Special tokens
written in the text ("ACG[MASK]T") become their ids. A character that is not DNA is an error
naming it (the package tokenizer's), never a silent [UNK].
This file is copied into every export (janus_pretrain/hf/remote_code.py).
"""
from __future__ import annotations

import importlib

from transformers import PreTrainedTokenizer

from janus_pretrain.tokenizer import A_ID, C_ID, G_ID, N_ID, SPECIAL_TOKENS, T_ID, decode, encode_numpy

_VOCAB = {**{token: i for i, token in enumerate(SPECIAL_TOKENS)},
          **dict(zip("ACGTN", (A_ID, C_ID, G_ID, T_ID, N_ID)))}


class JanusDNATokenizer(PreTrainedTokenizer):
    vocab_files_names: dict[str, str] = {}  # the ids are code (janus_pretrain.tokenizer), no vocabulary file
    # the model refuses padding, so padded batches must carry the mask that shows it
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, mode: str = "janus", **kwargs):
        self.mode = mode
        encode_numpy("", mode)  # an unknown mode is an error here, not at the first sequence
        for name, token in (("cls_token", "[CLS]"), ("sep_token", "[SEP]"), ("bos_token", "[BOS]"),
                            ("mask_token", "[MASK]"), ("pad_token", "[PAD]"), ("unk_token", "[UNK]")):
            kwargs.setdefault(name, token)
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return len(_VOCAB)

    def get_vocab(self) -> dict[str, int]:
        return {**_VOCAB, **self.added_tokens_encoder}

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        encode_numpy(text, self.mode)  # raises on a character that is not DNA, naming it and its position
        return list(text)

    def _convert_token_to_id(self, token: str) -> int:
        return _VOCAB[token] if token in SPECIAL_TOKENS else int(encode_numpy(token, self.mode)[0])

    def _convert_id_to_token(self, index: int) -> str:
        return SPECIAL_TOKENS[index] if index < len(SPECIAL_TOKENS) else decode([index])

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        return token_ids_0 + (token_ids_1 or [])  # as janus_pretrain.tokenizer.encode: nothing added

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        ids = token_ids_0 + (token_ids_1 or [])
        return [int(i < len(SPECIAL_TOKENS)) for i in ids] if already_has_special_tokens else [0] * len(ids)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save; for the package's own class (whose code transformers does not copy)
        the export's build step adds the code and tokenizer_config.json's AutoTokenizer entry."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        if __name__.startswith("janus_pretrain."):  # never true in an export's copy, which lacks the build step:
            # imported by name so that the copy does not carry it; config.json's keys come with the model's save
            importlib.import_module("janus_pretrain.hf.remote_code").write_remote_code(save_directory)
        return files

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()
