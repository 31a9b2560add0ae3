"""The Janus fusion mask (docs/model.md, "Fusion mask") as index arithmetic, shared by every fusion path.

Rows and keys index the 2L concatenation [forward stream 0..L-1 ; backward stream L..2L-1],
both in original sequence order. Its own module so that the reference, the FlexAttention block
mask and the causal-pieces path all import it without importing each other.
"""
from __future__ import annotations

import torch


def janus_allowed(q_idx: torch.Tensor, kv_idx: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Boolean 'row q may read key k' for broadcastable index tensors."""
    fwd_q, fwd_k = q_idx < seq_len, kv_idx < seq_len
    return ((fwd_q & fwd_k & (kv_idx <= q_idx))
            | (fwd_q & ~fwd_k & (kv_idx - seq_len >= q_idx + 2))
            | (~fwd_q & fwd_k & (kv_idx <= q_idx - seq_len - 2))
            | (~fwd_q & ~fwd_k & (kv_idx >= q_idx)))


def janus_mask_mod(seq_len: int):
    """FlexAttention mask_mod(b, h, q_idx, kv_idx) for the Janus mask of a length-seq_len input."""
    def mask_mod(b, h, q_idx, kv_idx):
        return janus_allowed(q_idx, kv_idx, seq_len)
    return mask_mod
