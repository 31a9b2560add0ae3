"""Sequence classification on a pretrained Janus backbone: mean-pooled states + a linear head.

Reverse-complement conjoining (as in the Caduceus/JanusDNA downstream code) runs the classifier
on both strands and averages the logits, so the prediction is strand-symmetric by construction.

Batches hold sequences of one length only: the backbone is bidirectional, so right-padding
would change the backward stream of every real position. Grouping by length keeps each
sequence's states exactly what they would be alone.
"""
from __future__ import annotations

import random

import torch
from torch import nn

from janus_pretrain.model import JanusModel
from janus_pretrain.tokenizer import encode, reverse_complement


POOLINGS = ("mean", "flatten")


class SequenceClassifier(nn.Module):
    """pooling "mean": average of the per-position states (any length; the reference head).
    pooling "flatten": all states of a fixed-length input concatenated, a position-aware linear
    head for short fixed-length tasks (seq_len required)."""

    def __init__(self, backbone: JanusModel, num_classes: int, rc_conjoin: bool = False, dropout: float = 0.0,
                 pooling: str = "mean", seq_len: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "flatten" and seq_len < 1:
            raise ValueError("pooling 'flatten' needs the fixed sequence length (seq_len)")
        self.backbone = backbone
        self.rc_conjoin = rc_conjoin
        self.pooling, self.seq_len = pooling, seq_len
        self.dropout = nn.Dropout(dropout)
        width = backbone.config.d_model * (seq_len if pooling == "flatten" else 1)
        self.head = nn.Linear(width, num_classes)
        nn.init.normal_(self.head.weight, std=backbone.config.initializer_range)
        nn.init.zeros_(self.head.bias)

    def _pooled(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.backbone(input_ids)
        if self.pooling == "mean":
            return out.hidden_states.float().mean(1), out.aux_loss  # (B, D)
        if input_ids.shape[1] != self.seq_len:
            raise ValueError(f"pooling 'flatten' was set up for length {self.seq_len}, got {input_ids.shape[1]}")
        return out.hidden_states.float().flatten(1), out.aux_loss  # (B, L*D)

    def _strand_logits(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, aux = self._pooled(input_ids)
        return self.head(self.dropout(pooled)), aux  # (B, C)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids -> (logits (B, C), MoE aux loss)."""
        logits, aux = self._strand_logits(input_ids)
        if self.rc_conjoin:
            rc_logits, rc_aux = self._strand_logits(reverse_complement(input_ids))
            logits, aux = (logits + rc_logits) / 2, (aux + rc_aux) / 2
        return logits, aux


class ViewClassifier(SequenceClassifier):
    """Inputs (B, V, L): V views of each example, each run and pooled alone, their logits averaged;
    (B, L): one view. The benchmark protocols' reverse-complement conjoining (evaluation/benchmarks/
    protocol.py): view 1 is the reverse complement of the sequence, cut and left-padded by itself,
    which the id-level flip of rc_conjoin (padding moved to the right) is not."""

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if input_ids.dim() == 2:
            return self._strand_logits(input_ids)
        batch, views = input_ids.shape[:2]
        logits, aux = self._strand_logits(input_ids.flatten(0, 1))  # (B*V, C)
        return logits.view(batch, views, -1).mean(1), aux


class AlleleDifferenceClassifier(SequenceClassifier):
    """A variant's two windows: inputs (B, 2V, L) hold V (reference, alternative) pairs (a strand
    each); the head reads [pooled alt, pooled alt - pooled ref] (2D features) per pair and the
    pairs' logits are averaged. Beyond the official eQTL head, which reads the alt window alone."""

    def __init__(self, backbone: JanusModel, num_classes: int, dropout: float = 0.0):
        super().__init__(backbone, num_classes, dropout=dropout)
        self.head = nn.Linear(2 * backbone.config.d_model, num_classes)
        nn.init.normal_(self.head.weight, std=backbone.config.initializer_range)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, views = input_ids.shape[:2]
        if views % 2:
            raise ValueError(f"AlleleDifferenceClassifier takes (reference, alternative) pairs; got {views} views")
        pooled, aux = self._pooled(input_ids.flatten(0, 1))
        pooled = pooled.view(batch, views // 2, 2, -1)  # (B, pairs, ref/alt, D)
        ref, alt = pooled[:, :, 0], pooled[:, :, 1]
        logits = self.head(self.dropout(torch.cat([alt, alt - ref], -1)))  # (B, pairs, C)
        return logits.mean(1), aux


def encode_all(sequences: list[str], mode: str = "janus") -> list[torch.Tensor]:
    """Token ids of each sequence; mode: the model's tokenizer (model.tokenizer)."""
    return [encode(s, mode) for s in sequences]


def input_lengths(inputs) -> list[int]:
    """Length of every input, for length_batches; a lazy input list (e.g. eQTL windows built on demand)
    says them with .lengths() instead of being materialised."""
    lengths = getattr(inputs, "lengths", None)
    return lengths() if callable(lengths) else [len(x) for x in inputs]


def length_batches(lengths: list[int], batch_size: int, shuffle: bool = False, seed: int = 0) -> list[list[int]]:
    """Index batches, each of one sequence length; shuffled within and across lengths if asked."""
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    rng = random.Random(seed)
    batches = []
    for n in sorted(by_length):
        members = by_length[n]
        if shuffle:
            rng.shuffle(members)
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


@torch.no_grad()
def predict_logits(model: SequenceClassifier, ids: list[torch.Tensor], batch_size: int = 64,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, C) fp32 logits in input order."""
    model.eval()
    out = torch.empty(len(ids), model.head.out_features)
    for batch in length_batches(input_lengths(ids), batch_size):
        logits, _ = model(torch.stack([ids[i] for i in batch]).to(device))
        out[batch] = logits.float().cpu()
    return out
