"""Janus fusion attention as two causal attentions merged by log-sum-exp: exact, O(L) memory.

The Janus mask (model/janus_mask.py) over the 2L rows [forward 0..L-1 ; backward L..2L-1] is a
union of causal pieces once each stream is read in its own causal order (the backward stream
reversed). Per stream s, in that order (row i = the i-th row the stream has seen):
  - self piece:  row i reads its own stream's rows 0..i                       (causal)
  - cross piece: row i reads the other stream's rows 0..L-3-i  (forward row q reads backward
    rows >= q+2; backward row i reads forward rows <= i-2). Reversing the query rows makes it
    causal again: piece row t = stream row L-3-t reads the other stream's rows 0..t. Stream rows
    L-2 and L-1 (forward rows L-2, L-1; backward rows 1, 0) read no key of the other stream.
Both streams ride in one kernel call per piece, stacked on the batch axis: (2B, H, L, Dh).

Forward: out_s, lse_s = causal(q, k, v); out_c, lse_c = causal(cross inputs); the row's output
is merge_attention of the two (the rows without cross keys carry lse = -inf there and take the
self piece alone). Backward: each piece's kernel backward with the MERGED output and lse
(model/piece_kernels.py explains why that is exact); the cross gradients are mapped back to the
rows they came from and added. Nothing of size L x L exists at any point, and no mask tensor.

Context parallelism (model/context_parallel.py): with each rank holding a slice of both streams (in causal
order), the self piece is ordinary causal ring attention over the ranks, and the cross piece is
causal ring attention between the query slice reversed and the other stream's key slices, offset
by two rows. Each (query slice, key slice) pair is one piece kernel call (causal on the diagonal
pair, full off it, skipped above it; the two-row offset splits the pair a cross piece starts in); merge_attention folds the partial (out, lse) as they
arrive, and backward replays the pairs with the final merged (out, lse), exactly as here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CROSS_SHIFT = 2  # a stream's row reads the other stream from two rows away (docs/model.md, "Fusion mask")


def to_streams(x: torch.Tensor, seq_len: int, width: int | None = None) -> torch.Tensor:
    """(B, H, 2L, Dh) rows -> (2B, H, L, width): forward stream, then backward stream reversed,
    each in its causal order; head dim zero-padded to `width` in the same copy (for kernels that
    take multiples of 8)."""
    batch, heads, _, dh = x.shape
    width = width or dh
    xs = x.new_empty(2 * batch, heads, seq_len, width)
    xs[:batch, ..., :dh] = x[:, :, :seq_len]
    xs[batch:, ..., :dh] = x[:, :, seq_len:].flip(2)
    xs[..., dh:] = 0
    return xs


def from_streams(xs: torch.Tensor, batch: int, head_dim: int | None = None) -> torch.Tensor:
    """Inverse of to_streams: (2B, H, L, width) -> (B, H, 2L, head_dim), contiguous."""
    head_dim = head_dim or xs.shape[-1]
    return torch.cat([xs[:batch, ..., :head_dim], xs[batch:, ..., :head_dim].flip(2)], dim=2)


def _other_stream(xs: torch.Tensor, batch: int) -> torch.Tensor:
    """Swap the two stream halves of the batch axis: entry n becomes the other stream's."""
    return torch.cat([xs[batch:], xs[:batch]], dim=0)


def _cross_rows(xs: torch.Tensor, batch: int, n_cross: int) -> torch.Tensor:
    """Cross-piece query rows: the first n_cross rows of the other stream, reversed, so that entry
    n of the result reads stream n's keys (which stay in place: no copy of k and v)."""
    return _other_stream(xs[:, :, :n_cross], batch).flip(2)


def merge_attention(out_a, lse_a, out_b, lse_b):
    """Attention over the union of two disjoint key sets, from each set's (out, lse).

    out (N, H, M, Dh), lse (N, H, M). A row with no key in a set has lse -inf there and takes
    nothing from it (whatever its out holds, NaN included); a row with no key at all gets out 0
    and lse -inf. Computed in lse's dtype, returned in out_a's.
    """
    lse = torch.logaddexp(lse_a, lse_b)
    ref = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # avoids -inf - -inf = NaN
    parts = []
    for out, part_lse in ((out_a, lse_a), (out_b, lse_b)):
        weight = torch.exp(part_lse - ref)[..., None]  # 0 for rows without keys in this set
        parts.append(torch.where(weight > 0, out.to(weight.dtype) * weight, 0.0))
    return (parts[0] + parts[1]).to(out_a.dtype), lse


def pieces_forward(kernel, qs, ks, vs, scale: float):
    """Stream-major (2B, H, L, Dh) q, k, v -> merged (out, lse, states for pieces_backward)."""
    batch, seq_len = qs.shape[0] // 2, qs.shape[2]
    out, lse, self_state = kernel.forward(qs, ks, vs, scale)  # (2B, H, L, Dh), (2B, H, L)
    n_cross = seq_len - CROSS_SHIFT
    if n_cross <= 0:  # L <= 2: no row reads the other stream
        return out, lse, (self_state, None)
    out_c, lse_c, cross_state = kernel.forward(_cross_rows(qs, batch, n_cross), ks[:, :, :n_cross],
                                               vs[:, :, :n_cross], scale)
    # back to the query rows' own stream and order; the last two rows read no cross key
    out_c = F.pad(_cross_rows(out_c, batch, n_cross), (0, 0, 0, CROSS_SHIFT))
    lse_c = F.pad(_cross_rows(lse_c[..., None], batch, n_cross)[..., 0], (0, CROSS_SHIFT), value=float("-inf"))
    out, lse = merge_attention(out, lse, out_c, lse_c)
    return out, lse, (self_state, cross_state)


def pieces_backward(kernel, dos, qs, ks, vs, out, lse, states, scale: float):
    """Gradients (dq, dk, dv), stream-major, given the merged out and lse of pieces_forward."""
    batch, seq_len = qs.shape[0] // 2, qs.shape[2]
    self_state, cross_state = states
    n_cross = seq_len - CROSS_SHIFT
    cross = None
    if n_cross > 0:
        # first, while only dos is alive beside the saved tensors: its inputs die right after
        rows = [_cross_rows(t, batch, n_cross) for t in (dos, qs, out)]
        lse_rows = _cross_rows(lse[..., :n_cross, None], batch, n_cross)[..., 0]
        cross = kernel.backward(rows[0], rows[1], ks[:, :, :n_cross], vs[:, :, :n_cross], rows[2],
                                lse_rows, cross_state, scale)
        del rows, lse_rows
    dq, dk, dv = kernel.backward(dos, qs, ks, vs, out, lse, self_state, scale)
    if cross is not None:
        dq_c, dk_c, dv_c = cross
        dq[:, :, :n_cross] += _cross_rows(dq_c, batch, n_cross)  # back to the rows that asked
        dk[:, :, :n_cross] += dk_c
        dv[:, :, :n_cross] += dv_c
    return dq, dk, dv


class _FusionPieces(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, seq_len, kernel, scale):
        batch, head_dim = q.shape[0], q.shape[-1]
        width = -(-head_dim // kernel.head_dim_multiple) * kernel.head_dim_multiple
        scale = head_dim ** -0.5 if scale is None else scale  # of the model's head dim, not the kernel's padded one
        qs, ks, vs = (to_streams(t, seq_len, width) for t in (q, k, v))  # (2B, H, L, width)
        out, lse, states = pieces_forward(kernel, qs, ks, vs, scale)
        ctx.save_for_backward(qs, ks, vs, out, lse)
        ctx.kernel, ctx.states, ctx.seq_len, ctx.head_dim, ctx.scale = kernel, states, seq_len, head_dim, scale
        return from_streams(out, batch, head_dim)  # (B, H, 2L, Dh)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        qs, ks, vs, out, lse = ctx.saved_tensors
        batch = qs.shape[0] // 2
        dos = to_streams(grad, ctx.seq_len, qs.shape[-1])
        grads = pieces_backward(ctx.kernel, dos, qs, ks, vs, out, lse, ctx.states, ctx.scale)
        del dos
        dq, dk, dv = grads
        del grads  # each stream-major gradient dies as soon as its (B, H, 2L, Dh) copy exists
        dq = from_streams(dq, batch, ctx.head_dim)
        dk = from_streams(dk, batch, ctx.head_dim)
        dv = from_streams(dv, batch, ctx.head_dim)
        return dq, dk, dv, None, None, None


def fusion_attention_pieces(q, k, v, seq_len: int, kernel, scale: float | None = None):
    """Janus-masked attention (B, H, 2L, Dh) -> (B, H, 2L, Dh) from two causal kernel calls.

    kernel: a piece backend of model/piece_kernels.py for q's device and dtype. Exact (up to the
    kernels' rounding) against fusion_attention_reference; scale None = 1/sqrt(Dh).
    """
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"fusion attention: q, k, v must share shape (B, H, 2L, Dh), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[2] != 2 * seq_len or seq_len < 1:
        raise ValueError(f"fusion attention: expected 2 * seq_len = {2 * seq_len} rows (seq_len >= 1), "
                         f"got {q.shape[2]}")
    return _FusionPieces.apply(q, k, v, seq_len, kernel, scale)
