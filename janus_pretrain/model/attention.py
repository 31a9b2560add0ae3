"""Multi-head attention modules: per-stream causal attention and the Janus fusion attention.

Both use the kernel slot, so flash/Flex kernels and the torch reference share parameters.
No positional encoding: the Mamba layers before them carry position, as in Jamba/JanusDNA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from janus_pretrain.model.context_parallel import (ContextParallel, StreamSlices, causal_attention_across_slices,
                                                   fusion_attention_across_slices)
from janus_pretrain.model.kernels import KernelSlot
from janus_pretrain.model.layers import init_linear

# score elements of one reference fusion-attention query block (fp32: 256 MiB): the block's
# rows shrink as 2L grows so the transient stays constant instead of growing with L
FUSION_SCORE_BUDGET = 1 << 26


class _MultiHeadProjections(nn.Module):
    def __init__(self, d_model: int, n_heads: int, std: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv_proj = init_linear(d_model, 3 * d_model, std)
        self.out_proj = init_linear(d_model, d_model, std)

    def split_heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, l, d = hidden.shape
        qkv = self.qkv_proj(hidden).view(b, l, 3, self.n_heads, d // self.n_heads)  # (B, L, 3, H, Dh)
        return qkv.unbind(dim=2)  # 3 x (B, L, H, Dh)


class CausalSelfAttention(_MultiHeadProjections):
    """Causal attention inside one stream (each stream is causal in its own order)."""

    def __init__(self, d_model: int, n_heads: int, std: float, kernels: KernelSlot,
                 stream: StreamSlices | None = None):
        super().__init__(d_model, n_heads, std)
        self.kernels = kernels
        self.stream = stream  # context parallel: this stream's slices

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        q, k, v = self.split_heads(hidden)
        kernels = self.kernels.get(hidden.device)
        if self.stream is None:
            out = kernels.causal_attention(q, k, v)  # (B, L, H, Dh)
        else:
            out = causal_attention_across_slices(kernels, q, k, v, self.stream)
        return self.out_proj(out.flatten(2))


class FusionAttention(_MultiHeadProjections):
    """Attention over [forward rows ; backward rows] (2L rows) under the Janus mask, or unmasked
    (janus_mask=False, the mlm objective: every row reads every row)."""

    def __init__(self, d_model: int, n_heads: int, std: float, kernels: KernelSlot, query_block: int,
                 janus_mask: bool = True, scale: float | None = None, context: ContextParallel | None = None):
        super().__init__(d_model, n_heads, std)
        self.context = context  # context parallel: rows are this rank's [forward slice ; backward slice]
        self.kernels = kernels
        self.query_block = query_block
        self.janus_mask = janus_mask
        self.scale = scale  # None: 1/sqrt(head dim); official JanusDNA: 1/sqrt(its zero-padded head dim)

    def block_rows(self, batch: int, heads: int, n_keys: int) -> int:
        """Query rows per reference block: query_block, fewer where the block's (B, H, rows, 2L)
        scores would pass FUSION_SCORE_BUDGET (with a fixed block they grow with 2L: 16 KiB per
        key row at 4 heads x 1024 rows in fp32, more than all other activations of a 1m step)."""
        return max(1, min(self.query_block, FUSION_SCORE_BUDGET // max(batch * heads * n_keys, 1)))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:  # (B, 2L, D) -> (B, 2L, D)
        q, k, v = (t.transpose(1, 2) for t in self.split_heads(rows))  # (B, H, 2L, Dh)
        if not self.janus_mask:
            # no mask: torch's SDPA runs its own flash kernel (CPU and CUDA), O(L) memory
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, H, 2L, Dh)
            return self.out_proj(out.transpose(1, 2).flatten(2))
        if self.context is not None:
            out = fusion_attention_across_slices(self.kernels.get(rows.device), q, k, v, self.context, self.scale)
            return self.out_proj(out.transpose(1, 2).flatten(2))
        out = self.kernels.get(rows.device).fusion_attention(q, k, v, rows.shape[1] // 2,
                                                             query_block=self.block_rows(*q.shape[:3]), scale=self.scale)
        return self.out_proj(out.transpose(1, 2).flatten(2))  # (B, 2L, D)
