"""Embeddings of FASTA records from an exported backbone (launch/embed.py).

Each record is cut into consecutive windows of `window` bases (the last one shorter); windows
of one length are batched. Per-position states are the backbone read-out (a position's state
never saw its own base, but saw both sides within its window); the per-record embedding is
their mean over all positions. Context is bounded by the window: pick the length the model was
pretrained at.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from janus_pretrain.atomic_io import temporary_path
from janus_pretrain.downstream.indexed_fasta import FastaError, fetch, open_fasta
from janus_pretrain.model import JanusModel
from janus_pretrain.tokenizer import TokenizerError, encode, reverse_complement


@dataclass
class Embeddings:
    names: list[str]
    lengths: list[int]
    mean: np.ndarray  # (N, D) float32
    states: list[np.ndarray] | None  # per record (L_i, D), when asked for


def window_starts(length: int, window: int) -> list[tuple[int, int]]:
    """[start, end) windows tiling [0, length)."""
    return [(s, min(s + window, length)) for s in range(0, length, window)]


@torch.no_grad()
def embed_ids(backbone: JanusModel, ids: torch.Tensor, window: int, batch_size: int = 8,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """(L,) ids -> (L, D) fp32 states, computed window by window, batched by window length."""
    spans = window_starts(len(ids), window)
    states = torch.empty(len(ids), backbone.config.d_model)
    by_length: dict[int, list[tuple[int, int]]] = {}
    for start, end in spans:
        by_length.setdefault(end - start, []).append((start, end))
    for group in by_length.values():
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            batch = torch.stack([ids[s:e] for s, e in chunk]).to(device)  # (b, W)
            hidden = backbone(batch).hidden_states.float().cpu()  # (b, W, D)
            for (start, end), h in zip(chunk, hidden):
                states[start:end] = h
    return states


@torch.no_grad()
def embed_sequence_ids(backbone: torch.nn.Module, ids: list[torch.Tensor], batch_size: int = 64,
                       rc_conjoin: bool = False, device: str | torch.device = "cpu", progress=None,
                       pooling: str = "mean") -> np.ndarray:
    """(N, D) float32 mean-pooled states of whole sequences, in input order (pooling "flatten":
    (N, L*D), every position's state, for fixed-length inputs); with rc_conjoin the mean of both
    strands (for flatten, the reverse strand's states are flipped back so position p meets p).
    Batches hold one length each (padding would change the backward stream); the module's
    train/eval mode is restored afterwards. `progress(n)` gets the sequences done per batch."""
    from janus_pretrain.downstream.classification import length_batches

    if pooling == "flatten" and len({len(x) for x in ids}) > 1:
        raise ValueError(f"pooling 'flatten' needs sequences of one length; found lengths "
                         f"{sorted({len(x) for x in ids})[:5]}")

    def pool(states: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, D) or (B, L*D)
        return states.float().mean(1) if pooling == "mean" else states.float().flatten(1)

    was_training = backbone.training
    backbone.eval()
    out: np.ndarray | None = None
    try:
        for batch in length_batches([len(x) for x in ids], batch_size):
            x = torch.stack([ids[i] for i in batch]).to(device)  # (B, L)
            pooled = pool(backbone(x).hidden_states)
            if rc_conjoin:
                pooled = (pooled + pool(backbone(reverse_complement(x)).hidden_states.flip(1))) / 2
            if out is None:
                out = np.empty((len(ids), pooled.shape[1]), dtype=np.float32)
            out[batch] = pooled.cpu().numpy()
            if progress is not None:
                progress(len(batch))
    finally:
        backbone.train(was_training)
    return out


def embed_fasta(backbone: JanusModel, fasta_path: str | Path, window: int = 1024, per_position: bool = False,
                batch_size: int = 8, device: str | torch.device = "cpu", progress=None) -> Embeddings:
    backbone.eval()
    fasta = open_fasta(fasta_path)
    names, lengths, means, states = [], [], [], []
    for name in fasta.keys():
        length = len(fasta[name])
        if length == 0:
            raise FastaError(f"{fasta_path}: record {name!r} is empty")
        try:
            ids = encode(fetch(fasta, name, 0, length), backbone.config.tokenizer)
        except TokenizerError as exc:
            raise FastaError(f"{fasta_path}: record {name!r}: {exc}") from None
        record_states = embed_ids(backbone, ids, window, batch_size, device)  # (L, D)
        names.append(name)
        lengths.append(length)
        means.append(record_states.double().mean(0).float().numpy())
        if per_position:
            states.append(record_states.numpy())
        if progress is not None:
            progress(name, length)
    return Embeddings(names, lengths, np.stack(means), states if per_position else None)


def save_npz(embeddings: Embeddings, out_path: str | Path) -> Path:
    """names (N,), lengths (N,), mean (N, D), and states_<i> (L_i, D) per record when present."""
    out_path = Path(out_path)
    arrays = {"names": np.array(embeddings.names), "lengths": np.array(embeddings.lengths, dtype=np.int64),
              "mean": embeddings.mean}
    for i, s in enumerate(embeddings.states or []):
        arrays[f"states_{i}"] = s
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(out_path)
    with tmp.open("wb") as handle:  # a file object: numpy would append .npz to a bare name
        np.savez(handle, **arrays)
    os.replace(tmp, out_path)
    return out_path
