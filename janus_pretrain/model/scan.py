"""Selective scan (Mamba-1) in plain PyTorch: an exact sequential reference and a chunked scan.

Semantics and layouts are those of mamba_ssm's selective_scan_fn (one group of B/C):
    u, delta, z: (B, Di, L)   A: (Di, N) real   B, C: (B, N, L)   D, delta_bias: (Di,)
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t        # (B, Di, N) per step
    y_t = C_t . h_t + D * u_t ;  y = y * silu(z)                   # (B, Di, L)
Everything is computed in fp32 and returned in u's dtype.

The chunked scan is a custom autograd Function: it saves only its (B, Di, L) / (B, N, L) inputs
and recomputes the (B, Di, L, N) states in backward, one slab of channels at a time, so memory
is linear in L with a small constant (no per-step autograd graph).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Elements of one (B, Di_slab, L, N) fp32 work tensor; the scan holds about four of them.
_SLAB_ELEMENTS = 1 << 24


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


def linear_scan(log_a: torch.Tensor, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """All states of h_t = exp(log_a_t) * h_{t-1} + x_t, h_{-1} = 0, along dim 2 (no autograd).

    log_a, x: (B, D, L, N) with log_a <= 0 -> h: (B, D, L, N). Work: T sequential steps within
    all L/T chunks at once, then the chunk-end states are themselves a linear scan of length L/T
    (recursive), then each state adds its chunk's carried-in state times the within-chunk decay
    exp(cumsum(log_a)) <= 1 (never exp of a positive sum, so large |delta*A| stays finite).
    """
    batch, dim, length, n = x.shape
    if length == 0:
        return x.clone()
    t_len = max(1, min(chunk, length))
    n_chunks = -(-length // t_len)
    pad = n_chunks * t_len - length
    if pad:  # zero decay-log and zero input past the end change nothing before it
        log_a = F.pad(log_a, (0, 0, 0, pad))
        x = F.pad(x, (0, 0, 0, pad))
    # (T, B, D, nc, N): each within-chunk step reads one contiguous slab. clone, not
    # contiguous(): the in-place work below must never write into the caller's tensors.
    la = log_a.reshape(batch, dim, n_chunks, t_len, n).permute(3, 0, 1, 2, 4).clone(
        memory_format=torch.contiguous_format)
    h = x.reshape(batch, dim, n_chunks, t_len, n).permute(3, 0, 1, 2, 4).clone(
        memory_format=torch.contiguous_format)
    cum = la.cumsum(0)  # within-chunk cumulative log decay, <= 0
    decay = la.exp_()
    for t in range(1, t_len):  # zero-initialised state inside every chunk
        h[t].addcmul_(decay[t], h[t - 1])
    if n_chunks > 1:
        # states at chunk ends follow the same recurrence over chunks
        ends = linear_scan(cum[-1], h[-1], chunk)
        carry_in = F.pad(ends[:, :, :-1], (0, 0, 1, 0))  # (B, D, nc, N) state entering chunk c
        h.addcmul_(cum.exp_(), carry_in.unsqueeze(0))
    out = h.permute(1, 2, 3, 0, 4).reshape(batch, dim, n_chunks * t_len, n)
    return out[:, :, :length] if pad else out


class _ScanCore(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t; fp32 in and out."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        ctx.save_for_backward(u, delta, A, B, C)
        ctx.chunk = chunk
        y = u.new_empty(u.shape)  # (B, Di, L)
        for sl in _slabs(u, A):
            log_a, x = _terms(u[:, sl], delta[:, sl], A[sl], B)
            h = linear_scan(log_a, x, chunk)  # (B, s, L, N)
            y[:, sl] = torch.einsum("bdln,bnl->bdl", h, C)
        return y

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C = ctx.saved_tensors
        chunk = ctx.chunk
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dA, dB, dC = torch.zeros_like(A), torch.zeros_like(B), torch.zeros_like(C)
        for sl in _slabs(u, A):
            u_s, delta_s, A_s, gy_s = u[:, sl], delta[:, sl], A[sl], gy[:, sl]
            log_a, x = _terms(u_s, delta_s, A_s, B)
            h = linear_scan(log_a, x, chunk)  # (B, s, L, N)
            dC += torch.einsum("bdl,bdln->bnl", gy_s, h)
            # dL/dh_t = g_t + exp(log_a_{t+1}) dL/dh_{t+1}: a reversed linear scan
            g = gy_s[..., None] * C.transpose(1, 2)[:, None]  # (B, s, L, N)
            next_log_a = F.pad(log_a[:, :, 1:], (0, 0, 0, 1))
            dh = linear_scan(next_log_a.flip(2), g.flip(2), chunk).flip(2)
            del g, next_log_a
            del x
            # d(log_a_t) = dh_t * exp(log_a_t) * h_{t-1}; not dh * (h - x), which cancels
            # catastrophically when the decay is tiny
            dlog_a = F.pad(h[:, :, :-1], (0, 0, 1, 0)).mul_(log_a.exp_()).mul_(dh)
            del h, log_a
            dx_B = torch.einsum("bdln,bln->bdl", dh, B.transpose(1, 2))  # sum_n dh * B
            ddelta[:, sl] = dx_B * u_s + torch.einsum("bdln,dn->bdl", dlog_a, A_s)
            du[:, sl] = dx_B * delta_s
            dA[sl] = torch.einsum("bdln,bdl->dn", dlog_a, delta_s)
            dB += torch.einsum("bdln,bdl->bnl", dh, delta_s * u_s)
            del dh, dlog_a
        return du, ddelta, dA, dB, dC, None


def _terms(u, delta, A, B):
    log_a = delta[..., None] * A[None, :, None, :]  # (B, s, L, N)
    x = (delta * u)[..., None] * B.transpose(1, 2)[:, None]  # (B, s, L, N)
    return log_a, x


def _slabs(u, A):
    """Channel slices whose (B, s, L, N) work tensors stay under _SLAB_ELEMENTS each."""
    batch, dim, length = u.shape
    per_channel = max(1, batch * length * A.shape[1])
    step = max(1, min(dim, _SLAB_ELEMENTS // per_channel))
    return [slice(i, min(i + step, dim)) for i in range(0, dim, step)]


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
