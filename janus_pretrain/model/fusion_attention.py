"""Janus fusion attention: the mask of DESIGN.md section 1.3 and two exact implementations.

Rows and keys index the 2L concatenation [forward stream 0..L-1 ; backward stream L..2L-1],
both streams in original sequence order. Row q may attend key k when
    q <  L, k <  L : k <= q             forward past, itself included
    q <  L, k >= L : k - L >= q + 2     backward rows from q+2 on
    q >= L, k <  L : k <= (q - L) - 2   forward rows up to i-2
    q >= L, k >= L : k >= q             backward future, itself included
Every row sees at least itself, so no softmax row is empty.

- fusion_attention_reference: F.scaled_dot_product_attention per query block; each block builds
  only its (block, 2L) boolean mask from index arithmetic, and under autograd each block is
  wrapped in torch.utils.checkpoint (non-reentrant) so backward keeps only q/k/v and recomputes
  one block's scores at a time: memory is bounded by the query block, never by (2L)^2.
- fusion_attention_flex: torch FlexAttention with a block mask built once per (seq_len, device)
  for B=None, H=None (not sized by batch or heads). Compiled on CUDA; eager on CPU, where
  torch supports its forward only (no backward on CPU).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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


def _check(q, k, v, seq_len):
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"fusion attention: q, k, v must share shape (B, H, 2L, Dh), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[2] != 2 * seq_len:
        raise ValueError(f"fusion attention: expected 2 * seq_len = {2 * seq_len} rows, "
                         f"got {q.shape[2]}")


def _block(q_blk, k, v, start, seq_len):
    # (Q, 2L) mask for rows start..start+Q-1, from index arithmetic only
    rows = torch.arange(start, start + q_blk.shape[2], device=q_blk.device)[:, None]
    keys = torch.arange(k.shape[2], device=q_blk.device)[None, :]
    mask = janus_allowed(rows, keys, seq_len)
    return F.scaled_dot_product_attention(q_blk, k, v, attn_mask=mask)  # (B, H, Q, Dh)


def fusion_attention_reference(q, k, v, seq_len: int, query_block: int = 1024):
    """Exact Janus-masked attention, (B, H, 2L, Dh) -> (B, H, 2L, Dh), memory bounded by the block."""
    _check(q, k, v, seq_len)
    if query_block < 1:
        raise ValueError(f"fusion attention: query_block must be >= 1, got {query_block} "
                         "(model.fusion_query_block)")
    n = q.shape[2]
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outs = []
    for start in range(0, n, query_block):
        q_blk = q[:, :, start:start + query_block]
        if grad:
            outs.append(checkpoint(_block, q_blk, k, v, start, seq_len, use_reentrant=False))
        else:
            outs.append(_block(q_blk, k, v, start, seq_len))
    return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]


@functools.lru_cache(maxsize=16)
def janus_block_mask(seq_len: int, device: str):
    """FlexAttention BlockMask for (2L, 2L), shared by every batch element and head; cached."""
    from torch.nn.attention.flex_attention import create_block_mask
    n = 2 * seq_len
    return create_block_mask(janus_mask_mod(seq_len), B=None, H=None, Q_LEN=n, KV_LEN=n,
                             device=device)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    # flex_attention is only fused (and memory-efficient) when compiled; eager is a slow math path
    return torch.compile(flex_attention, dynamic=False)


def fusion_attention_flex(q, k, v, seq_len: int):
    """Janus-masked attention through FlexAttention; default scale 1/sqrt(Dh)."""
    from torch.nn.attention.flex_attention import flex_attention
    _check(q, k, v, seq_len)
    block_mask = janus_block_mask(seq_len, str(q.device))
    if q.device.type == "cuda":
        return _compiled_flex()(q, k, v, block_mask=block_mask)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError(
            "fusion attention: FlexAttention has no backward on CPU; train on CPU with "
            "fusion_attention_reference (the reference kernels), or call this under torch.no_grad()")
    # torch rejects CPU inputs that require grad even under no_grad, hence detach
    return flex_attention(q.detach(), k.detach(), v.detach(), block_mask=block_mask)

