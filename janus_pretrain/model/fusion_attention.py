"""Janus fusion attention: the mask of docs/model.md ("Fusion mask") and two exact implementations.

Rows and keys index the 2L concatenation [forward stream 0..L-1 ; backward stream L..2L-1],
both streams in original sequence order. Row q may attend key k when
    q <  L, k <  L : k <= q             forward past, itself included
    q <  L, k >= L : k - L >= q + 2     backward rows from q+2 on
    q >= L, k <  L : k <= (q - L) - 2   forward rows up to i-2
    q >= L, k >= L : k >= q             backward future, itself included
Every row sees at least itself, so no softmax row is empty.

- fusion_attention_reference: F.scaled_dot_product_attention per query block (blocks never
  straddle the two streams); each block reads only the about L + block keys its rows can see and
  builds only that (block, L + block) boolean mask from index arithmetic, and under autograd each block is
  wrapped in torch.utils.checkpoint (non-reentrant) so backward keeps only q/k/v and recomputes
  one block's scores at a time: memory is bounded by the query block, never by (2L)^2.
- fusion_attention_flex: torch FlexAttention with a block mask built once per (seq_len, device)
  for B=None, H=None (not sized by batch or heads), from tile arithmetic (model/block_mask.py).
  Compiled on CUDA; eager on CPU, where torch supports its forward only (no backward on CPU).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from janus_pretrain.model.block_mask import janus_block_mask_analytic
from janus_pretrain.model.janus_mask import janus_allowed


def _check(q, k, v, seq_len):
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"fusion attention: q, k, v must share shape (B, H, 2L, Dh), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[2] != 2 * seq_len:
        raise ValueError(f"fusion attention: expected 2 * seq_len = {2 * seq_len} rows, "
                         f"got {q.shape[2]}")


def _key_ranges(start: int, end: int, seq_len: int):
    """The two key ranges that rows start..end-1 (all in one stream) can read: about L + block
    of the 2L keys, so skipping the rest halves the work without changing any result."""
    if start < seq_len:  # forward rows: forward keys <= q, backward keys from q+2 on
        return (0, end), (min(seq_len + start + 2, 2 * seq_len), 2 * seq_len)
    i0, i1 = start - seq_len, end - seq_len  # backward rows: forward keys <= i-2, backward >= i
    return (0, max(0, i1 - 2)), (seq_len + i0, 2 * seq_len)


def _block(q_blk, k, v, start, seq_len, scale):
    (a0, a1), (b0, b1) = _key_ranges(start, start + q_blk.shape[2], seq_len)
    keys = torch.cat([torch.arange(a0, a1), torch.arange(b0, b1)]).to(q_blk.device)
    k_sel = torch.cat([k[:, :, a0:a1], k[:, :, b0:b1]], dim=2)  # (B, H, K, Dh)
    v_sel = torch.cat([v[:, :, a0:a1], v[:, :, b0:b1]], dim=2)
    # (Q, K) mask for rows start..start+Q-1, from index arithmetic only
    rows = torch.arange(start, start + q_blk.shape[2], device=q_blk.device)
    mask = janus_allowed(rows[:, None], keys[None, :], seq_len)
    return F.scaled_dot_product_attention(q_blk, k_sel, v_sel, attn_mask=mask, scale=scale)  # (B, H, Q, Dh)


def fusion_attention_reference(q, k, v, seq_len: int, query_block: int = 1024, scale: float | None = None):
    """Exact Janus-masked attention, (B, H, 2L, Dh) -> (B, H, 2L, Dh), memory bounded by the block;
    scale None = 1/sqrt(Dh)."""
    _check(q, k, v, seq_len)
    if query_block < 1:
        raise ValueError(f"fusion attention: query_block must be >= 1, got {query_block} "
                         "(model.fusion_query_block)")
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outs = []
    # blocks never straddle the two streams, whose rows read different key ranges
    for first, last in ((0, seq_len), (seq_len, 2 * seq_len)):
        for start in range(first, last, query_block):
            q_blk = q[:, :, start:min(start + query_block, last)]
            if grad:
                outs.append(checkpoint(_block, q_blk, k, v, start, seq_len, scale, use_reentrant=False))
            else:
                outs.append(_block(q_blk, k, v, start, seq_len, scale))
    return torch.cat(outs, dim=2)


@functools.lru_cache(maxsize=2)  # one mask is 4 GiB at 1 Mbp: keep the run's length(s) only
def janus_block_mask(seq_len: int, device: str):
    """FlexAttention BlockMask for (2L, 2L), shared by every batch element and head; cached.

    Built from tile arithmetic (model/block_mask.py): create_block_mask would first evaluate the
    mask on the whole (2L, 2L) grid, 4 TiB of booleans at 1 Mbp.
    """
    return janus_block_mask_analytic(seq_len, device)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    # flex_attention is only fused (and memory-efficient) when compiled; eager is a slow math path
    return torch.compile(flex_attention, dynamic=False)


def fusion_attention_flex(q, k, v, seq_len: int, scale: float | None = None):
    """Janus-masked attention through FlexAttention; scale None = 1/sqrt(Dh)."""
    from torch.nn.attention.flex_attention import flex_attention
    _check(q, k, v, seq_len)
    block_mask = janus_block_mask(seq_len, str(q.device))
    if q.device.type == "cuda":
        return _compiled_flex()(q, k, v, block_mask=block_mask, scale=scale)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError(
            "fusion attention: FlexAttention has no backward on CPU; train on CPU with "
            "fusion_attention_reference (the reference kernels), or call this under torch.no_grad()")
    # torch rejects CPU inputs that require grad even under no_grad, hence detach
    return flex_attention(q.detach(), k.detach(), v.detach(), block_mask=block_mask, scale=scale)

