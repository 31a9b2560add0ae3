"""Selective scan (Mamba-1) in plain PyTorch: an exact sequential reference and a chunked scan.

Semantics and layouts are those of mamba_ssm's selective_scan_fn (one group of B/C):
    u, delta, z: (B, Di, L)   A: (Di, N) real   B, C: (B, N, L)   D, delta_bias: (Di,)
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t        # (B, Di, N) per step
    y_t = C_t . h_t + D * u_t ;  y = y * silu(z)                   # (B, Di, L)
Everything is computed in fp32 and returned in u's dtype.

The chunked scan is a custom autograd Function: it saves only its (B, Di, L) / (B, N, L) inputs
and recomputes the (B, Di, L, N) states in backward, one time block of all channels at a time, so
memory is linear in L with a small constant (no per-step autograd graph).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Time steps of one block; the scan's work tensors are (B, Di, SCAN_BLOCK_STEPS, N) fp32 (about four
# alive at once in backward: 1.2 GB at Di 288, N 16). Launches per scan grow with L / SCAN_BLOCK_STEPS.
SCAN_BLOCK_STEPS = 1 << 14


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Shared front end: fp32 casts, delta bias/softplus, B/C group check (autograd ops)."""
    if B.dim() == 4 or C.dim() == 4:
        if B.shape[1] != 1 or C.shape[1] != 1:
            raise ValueError(
                f"selective scan: only one B/C group is supported, got B {tuple(B.shape)}, "
                f"C {tuple(C.shape)}; pass B/C as (batch, d_state, seq_len)")
        B, C = B.squeeze(1), C.squeeze(1)
    if A.is_complex():
        raise ValueError("selective scan: complex A is not supported (Mamba-1 real A only)")
    # fp32 work; fp64 inputs stay fp64 so that tests can build a float64 oracle
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    delta = delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u.to(work), delta, A.to(work), B.to(work), C.to(work)


def _finish(y, u, D, z, dtype):
    if D is not None:
        y = y + u * D.to(u.dtype)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(u.dtype))
    return y.to(dtype)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Exact step-by-step recurrence: the test oracle (slow, autograd through every step)."""
    dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    h = u.new_zeros(batch, dim, A.shape[1])  # (B, Di, N)
    ys = []
    for t in range(length):
        decay = torch.exp(delta[:, :, t, None] * A)  # (B, Di, N)
        h = decay * h + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))  # (B, Di)
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(batch, dim, 0)
    return _finish(y, u, D, z, dtype)


# The scan works in a chunked time-major layout, (T, B, s, nc, N): time t of chunk c sits at
# [t, :, :, c], so each of the T sequential steps reads one contiguous slab for all chunks at
# once. The big (.., N) tensors are born in that layout (products of small (B, s, L) tensors),
# so nothing of size B*s*L*N is ever permuted.


def _chunk_len(length: int, chunk: int) -> int:
    # at least 2 so that the recursion over chunk ends always shrinks
    return min(length, max(2, chunk))


def _to_tm(t: torch.Tensor, t_len: int, front: bool = False) -> torch.Tensor:
    """(..., L) -> (T, ..., nc) copy of t zero-padded to nc*T (at the end, or at the front)."""
    pad = -t.shape[-1] % t_len
    if pad:
        t = F.pad(t, (pad, 0) if front else (0, pad))
    # materialised: small (no N axis), and later broadcasts over N run much faster on it
    return t.reshape(*t.shape[:-1], -1, t_len).movedim(-1, 0).contiguous()


def _from_tm(t: torch.Tensor, length: int) -> torch.Tensor:
    """(T, ..., nc) -> (..., L), dropping end padding."""
    t = t.movedim(0, -1)
    return t.reshape(*t.shape[:-2], -1)[..., :length]


def _bc_tm(t: torch.Tensor, t_len: int, front: bool = False) -> torch.Tensor:
    """B or C (B, N, L) -> (T, B, 1, nc, N), broadcastable against the state."""
    return _to_tm(t, t_len, front).transpose(-1, -2).contiguous().unsqueeze(2)


def _scan_tm(delta: torch.Tensor, A: torch.Tensor, h: torch.Tensor, chunk: int) -> torch.Tensor:
    """In place: h (T, B, s, nc, N) inputs x -> states of h_t = exp(delta_t A) h_{t-1} + x_t.

    delta (T, B, s, nc) >= 0, A (s, N) <= 0. T sequential steps inside all chunks at once; the
    chunk-end states form the same kind of scan over chunks (decay exp(A * sum of the chunk's
    delta)), solved recursively; then each state adds the state carried into its chunk times
    exp(A * cumsum(delta)) <= 1 (never exp of a positive sum: large delta*A stays finite).
    """
    t_len, n_chunks = h.shape[0], h.shape[3]
    a = A[:, None, :]  # (s, 1, N)
    decay = torch.exp(delta[..., None] * a)  # (T, B, s, nc, N)
    for t in range(1, t_len):  # zero-initialised state inside every chunk
        h[t].addcmul_(decay[t], h[t - 1])
    if n_chunks > 1:
        cum = delta.cumsum(0)  # (T, B, s, nc), cheap: no N axis
        ends = _scan_states(cum[-1], A, h[-1], chunk)  # (B, s, nc, N) state at each chunk end
        carry_in = F.pad(ends[:, :, :-1], (0, 0, 1, 0))  # state entering chunk c
        torch.mul(cum[..., None], a, out=decay)
        h.addcmul_(decay.exp_(), carry_in)
    return h


def _scan_states(delta: torch.Tensor, A: torch.Tensor, x: torch.Tensor, chunk: int):
    """delta (B, s, L), x (B, s, L, N) -> all states (B, s, L, N); used for chunk-end carries."""
    length = delta.shape[-1]
    t_len = _chunk_len(length, chunk)
    pad = -length % t_len
    h = F.pad(x, (0, 0, 0, pad)) if pad else x
    h = h.reshape(*h.shape[:2], -1, t_len, h.shape[-1]).permute(3, 0, 1, 2, 4)
    h = h.clone(memory_format=torch.contiguous_format)  # never write into the caller's x
    _scan_tm(_to_tm(delta, t_len), A, h, chunk)
    h = h.permute(1, 2, 3, 0, 4)
    return h.reshape(*h.shape[:2], -1, h.shape[-1])[:, :, :length]


def _forward_states(u, delta, A, B, t_len, chunk):
    """States h (T, B, Di, nc, N) of a block from a zero state, in the chunked time-major layout."""
    d_tm = _to_tm(delta, t_len)
    x_tm = _to_tm(delta * u, t_len)[..., None]  # (T, B, s, nc, 1)
    b_tm = _bc_tm(B, t_len)  # (T, B, 1, nc, N)
    h = x_tm.new_empty(*d_tm.shape, A.shape[1])
    torch.mul(x_tm, b_tm, out=h)
    return _scan_tm(d_tm, A, h, chunk), d_tm, b_tm


def _block_states(u, delta, A, B, t_len, chunk, h0):
    """States h (T, B, Di, nc, N) of one time block, all channels, given the state h0 (B, Di, N)
    entering it (None: zero). The carry adds exp(A * cumsum(delta)) h0, cumsum taken from the
    block start: a non-positive exponent, so nothing overflows however long the block."""
    h, d_tm, b_tm = _forward_states(u, delta, A, B, t_len, chunk)
    if h0 is not None:
        decay = torch.mul(_to_tm(delta.cumsum(-1), t_len)[..., None], A[:, None, :]).exp_()
        h.addcmul_(decay, h0[None, :, :, None, :])
    return h, d_tm, b_tm


def _last_state(h: torch.Tensor, length: int) -> torch.Tensor:
    """State (B, Di, N) at the block's last real step (the padding after it is not a state)."""
    t_len = h.shape[0]
    return h[(length - 1) % t_len, :, :, (length - 1) // t_len].clone()


class _ScanCore(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t; fp32 in and out.

    The sequence is cut into time blocks of SCAN_BLOCK_STEPS steps; each block runs all channels at
    once (the chunked scan inside it), one (B, Di, N) state carried from block to block, so the
    number of kernel launches grows with L / SCAN_BLOCK_STEPS and not with d_inner. Forward keeps
    the state entering each block; backward runs the blocks in reverse, recomputing each block's
    states from it and carrying dL/dh of the next block's first step back.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        length = u.shape[2]
        t_len = _chunk_len(length, chunk)
        y = u.new_empty(u.shape)  # (B, Di, L)
        starts, h0 = [], None
        for sl in _blocks(length, t_len):
            starts.append(h0)
            n = sl.stop - sl.start
            h, _, _ = _block_states(u[..., sl], delta[..., sl], A, B[..., sl], t_len, chunk, h0)
            h0 = _last_state(h, n)
            y[..., sl] = _from_tm(h.mul_(_bc_tm(C[..., sl], t_len)).sum(-1), n)
        entering = torch.stack(starts[1:]) if len(starts) > 1 else u.new_zeros(0)
        ctx.save_for_backward(u, delta, A, B, C, entering)
        ctx.chunk = chunk
        return y

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, entering = ctx.saved_tensors
        chunk, length = ctx.chunk, u.shape[2]
        t_len = _chunk_len(length, chunk)
        gy = gy.contiguous()
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dA, dB, dC = torch.zeros_like(A), torch.empty_like(B), torch.empty_like(C)
        # delta_{t+1}, the decay from t to t+1 that dL/dh_t picks up from dL/dh_{t+1}
        next_delta = F.pad(delta[..., 1:], (0, 1))
        blocks = _blocks(length, t_len)
        dh_next = None  # dL/dh at the first step of the block after this one
        for k in range(len(blocks) - 1, -1, -1):
            sl = blocks[k]
            n = sl.stop - sl.start
            h0 = entering[k - 1] if k else None
            u_s, delta_s, gy_s = u[..., sl], delta[..., sl], gy[..., sl]
            h, d_tm, b_tm = _block_states(u_s, delta_s, A, B[..., sl], t_len, chunk, h0)
            gy_tm = _to_tm(gy_s, t_len)[..., None]  # (T, B, Di, nc, 1)
            dC[..., sl] = _from_tm((h * gy_tm).sum(2).transpose(-1, -2), n)
            # dL/dh_t = C_t gy_t + exp(delta_{t+1} A) dL/dh_{t+1}: a scan run on the reversed
            # block, padded at the front so that flipping its layout gives the forward layout
            nd_rev = next_delta[..., sl].flip(-1)
            work = torch.mul(_to_tm(gy_s.flip(-1), t_len, front=True)[..., None],
                             _bc_tm(C[..., sl].flip(-1), t_len, front=True))
            _scan_tm(_to_tm(nd_rev, t_len, front=True), A, work, chunk)
            if dh_next is not None:
                carry = torch.mul(_to_tm(nd_rev.cumsum(-1), t_len, front=True)[..., None], A[:, None, :])
                work.addcmul_(carry.exp_(), dh_next[None, :, :, None, :])
                del carry
            dh = work.flip(0, 3)  # (T, B, Di, nc, N) in forward layout
            dh_next = dh[0, :, :, 0].clone()
            # d(delta_t A) = dh_t * exp(delta_t A) * h_{t-1}; not dh * (h - x), which cancels
            # catastrophically when the decay is tiny
            h_prev = torch.empty_like(h)
            h_prev[1:] = h[:-1]
            h_prev[0, :, :, 1:] = h[-1, :, :, :-1]
            h_prev[0, :, :, 0] = 0 if h0 is None else h0
            del h
            torch.mul(d_tm[..., None], A[:, None, :], out=work)
            dlog_a = h_prev.mul_(work.exp_()).mul_(dh)
            del work, h_prev
            x_tm = _to_tm(delta_s * u_s, t_len)[..., None]
            dx_b = _from_tm((dh * b_tm).sum(-1), n)  # (B, Di, n): sum_n dh * B
            dB[..., sl] = _from_tm((dh * x_tm).sum(2).transpose(-1, -2), n)
            del dh
            ddelta[..., sl] = dx_b * u_s + _from_tm((dlog_a * A[:, None, :]).sum(-1), n)
            du[..., sl] = dx_b * delta_s
            dA += (dlog_a * d_tm[..., None]).sum((0, 1, 3))
            del dlog_a
        return du, ddelta, dA, dB, dC, None


def _blocks(length: int, t_len: int) -> list[slice]:
    """Time slices of SCAN_BLOCK_STEPS steps (rounded to whole chunks of t_len); the last may be short."""
    step = max(t_len, SCAN_BLOCK_STEPS // t_len * t_len)
    return [slice(i, min(i + step, length)) for i in range(0, length, step)]


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, chunk: int = 64):
    """Same result as selective_scan_ref; O(L) memory, T + L/T sequential steps per level."""
    if chunk < 1:
        raise ValueError(f"selective scan: chunk must be >= 1, got {chunk} (model.scan_chunk)")
    dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    y = _ScanCore.apply(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(),
                        C.contiguous(), int(chunk))
    return _finish(y, u, D, z, dtype)
