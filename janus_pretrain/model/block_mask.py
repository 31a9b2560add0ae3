"""The Janus FlexAttention BlockMask built from index arithmetic, never from a (2L, 2L) mask.

torch's create_block_mask (eager) evaluates mask_mod on the whole (Q_LEN, KV_LEN) grid: for the
2L rows of a 1 Mbp sample that is (2^21)^2 booleans, 4 TiB. The Janus mask needs no such grid:
inside each quadrant a row q may read key k iff k - q lies on one side of a threshold
(k - q <= 0, >= L + 2, <= -L - 2, >= 0), so a tile of rows [qa, qb] x keys [ka, kb] that sits in
one quadrant is full iff both extreme differences (ka - qb and kb - qa) are allowed and empty iff
neither is. Tiles that straddle the L boundary or are cut short at the end are marked partial
(always exact: FlexAttention applies mask_mod inside partial tiles).

The result has torch's layout (B = H = 1 broadcast over batch and heads; indices int32 of width
n_blocks, kv and transposed q orders) and equals create_block_mask's on every size where that
one can be built (tests/test_memory.py). Memory: 4 x n_blocks^2 int32 (n_blocks = 2L / 128),
built in row chunks so no transient exceeds one chunk.
"""
from __future__ import annotations

import torch

from janus_pretrain.model.janus_mask import janus_allowed, janus_mask_mod

BLOCK = 128  # FlexAttention's default sparse block size
ROW_CHUNK = 256  # tile rows classified at once (bounds the argsort transient)


def _tile_classes(rows: torch.Tensor, cols: torch.Tensor, seq_len: int, block: int):
    """(full, partial) booleans (len(rows), len(cols)) for tiles of rows x cols block indices."""
    n = 2 * seq_len
    qa, ka = rows[:, None] * block, cols[None, :] * block
    qb, kb = torch.clamp(qa + block, max=n) - 1, torch.clamp(ka + block, max=n) - 1
    inexact = ((qa < seq_len) & (qb >= seq_len)) | ((ka < seq_len) & (kb >= seq_len))
    inexact |= (qb - qa + 1 < block) | (kb - ka + 1 < block)  # ragged last tiles
    low, high = janus_allowed(qb, ka, seq_len), janus_allowed(qa, kb, seq_len)
    full = low & high & ~inexact
    empty = ~low & ~high & ~inexact
    return full, ~full & ~empty


def _ordered(classes_fn, n_blocks: int, device) -> tuple[torch.Tensor, ...]:
    """(num, indices) for partial and full tiles per row, in torch's order: selected tiles in
    ascending order, then the rest ascending (a stable descending argsort of the row)."""
    num_p = torch.empty(n_blocks, dtype=torch.int32, device=device)
    num_f = torch.empty_like(num_p)
    idx_p = torch.empty(n_blocks, n_blocks, dtype=torch.int32, device=device)
    idx_f = torch.empty_like(idx_p)
    everything = torch.arange(n_blocks, device=device)
    for start in range(0, n_blocks, ROW_CHUNK):
        rows = everything[start:start + ROW_CHUNK]
        full, partial = classes_fn(rows, everything)
        for cls, num, idx in ((partial, num_p, idx_p), (full, num_f, idx_f)):
            num[rows] = cls.sum(-1, dtype=torch.int32)
            idx[rows] = _stable_order(cls)
    return num_p, idx_p, num_f, idx_f


def _stable_order(selected: torch.Tensor) -> torch.Tensor:
    """Per row: the selected columns ascending, then the others ascending (int32); no sort."""
    sel = selected.to(torch.int32)
    before_sel = sel.cumsum(-1) - sel  # selected columns left of each column
    before_other = torch.arange(sel.shape[-1], device=sel.device, dtype=torch.int32) - before_sel
    position = torch.where(selected, before_sel, sel.sum(-1, keepdim=True, dtype=torch.int32) + before_other)
    columns = torch.arange(sel.shape[-1], device=sel.device, dtype=torch.int32).expand_as(sel)
    return torch.empty_like(sel).scatter_(-1, position.long(), columns)


def janus_block_mask_analytic(seq_len: int, device: str | torch.device = "cpu", block: int = BLOCK):
    """FlexAttention BlockMask of the Janus mask for 2 * seq_len rows and keys (B = H = 1)."""
    from torch.nn.attention.flex_attention import BlockMask

    if seq_len < 1:
        raise ValueError(f"fusion attention: seq_len must be >= 1, got {seq_len}")
    n = 2 * seq_len
    n_blocks = -(-n // block)
    device = torch.device(device)
    kv = _ordered(lambda r, c: _tile_classes(r, c, seq_len, block), n_blocks, device)
    # the transposed (q) order: for each key tile, the row tiles that read it
    q = _ordered(lambda c, r: tuple(t.T for t in _tile_classes(r, c, seq_len, block)), n_blocks, device)

    def shaped(num, idx):
        return num.view(1, 1, n_blocks), idx.view(1, 1, n_blocks, n_blocks)

    kv_num, kv_idx = shaped(kv[0], kv[1])
    full_kv_num, full_kv_idx = shaped(kv[2], kv[3])
    q_num, q_idx = shaped(q[0], q[1])
    full_q_num, full_q_idx = shaped(q[2], q[3])
    return BlockMask(seq_lengths=(n, n), kv_num_blocks=kv_num, kv_indices=kv_idx,
                     full_kv_num_blocks=full_kv_num, full_kv_indices=full_kv_idx,
                     q_num_blocks=q_num, q_indices=q_idx, full_q_num_blocks=full_q_num,
                     full_q_indices=full_q_idx, BLOCK_SIZE=(block, block), mask_mod=janus_mask_mod(seq_len))


def block_mask_bytes(seq_len: int, block: int = BLOCK) -> int:
    """Bytes the block mask keeps: four int32 (n_blocks, n_blocks) index tensors and the counts."""
    n_blocks = -(-2 * seq_len // block)
    return 4 * 4 * n_blocks * (n_blocks + 1)
