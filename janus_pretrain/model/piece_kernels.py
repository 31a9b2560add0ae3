"""Causal attention kernels that expose their log-sum-exp: the pieces of the fusion attention.

Every backend computes causal softmax attention (query i reads keys 0..i, scale 1/sqrt(Dh)):

    forward(q, k, v) -> (out, lse, state)       q, k, v, out (N, H, M, Dh); lse (N, H, M), fp32
                                                 (fp64 for fp64 inputs); state: what backward needs
    backward(dout, q, k, v, out, lse, state) -> (dq, dk, dv)

backward is called with the MERGED out and lse of every piece a row reads (fusion_pieces.py), not
with the piece's own: the softmax gradient of a key set is P * (dP - rowsum(dout * out)) with
P = exp(scores - lse), and both the normaliser lse and rowsum(dout * out) belong to the whole row.
Given the merged pair, each piece's kernel backward returns exactly its share of the gradient
(the ring-attention recipe), so no piece needs a mask beyond its own causal one.

- CpuFlashPieces: torch's CPU flash kernel (aten::_scaled_dot_product_flash_attention_for_cpu and
  its _backward), every float dtype. Default on CPU.
- TorchCudaFlashPieces: torch's CUDA flash kernel (aten::_scaled_dot_product_flash_attention and its
  _backward, the FlashAttention-2 kernel SDPA dispatches to), fp16/bf16. Default on CUDA without
  the flash-attn package.
- FlashAttnPieces: flash-attn >= 2.7's _flash_attn_forward / _flash_attn_backward, fp16/bf16.
- MathPieces: torch ops in query blocks, any device and dtype (fp32 on CUDA, where the flash
  kernels have no fp32 path), memory bounded by the block; the oracle of the others.
The CUDA kernels take their callables as arguments (model/kernels.py imports them), so the glue is
tested on CPU through shims with the same signatures (tests/kernel_shims.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

HALF = (torch.float16, torch.bfloat16)
# score elements of one MathPieces query block (fp32: 64 MiB), whatever L is
MATH_SCORE_BUDGET = 1 << 24


def _pad_head_dim(t: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """The CUDA flash kernels take head dims that are multiples of 8 (ours: 18 at D=72, 36 at D=144);
    zero columns change neither q.k nor the first Dh columns of p @ v."""
    extra = -t.shape[-1] % multiple
    return F.pad(t, (0, extra)) if extra else t


def _check_half(name: str, q: torch.Tensor) -> None:
    if q.dtype not in HALF:
        raise TypeError(f"fusion pieces: {name} runs in fp16/bf16 only, got {q.dtype}; "
                        "use MathPieces for other dtypes (select_kernels does this per dtype)")


class MathPieces:
    """Causal attention with (out, lse) in plain torch ops, query block by query block."""

    name = "math"

    def __init__(self, score_budget: int = MATH_SCORE_BUDGET):
        self.score_budget = score_budget

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype.is_floating_point

    def _blocks(self, q):
        n, h, m, _ = q.shape
        rows = max(1, min(m, self.score_budget // max(n * h * m, 1)))
        return [(a, min(a + rows, m)) for a in range(0, m, rows)]

    @staticmethod
    def _probs(q_blk, k_pre, start, lse_blk=None):
        """Causal scores of rows start.. over keys 0..end-1, and exp(scores - lse) (fp32+)."""
        scale = q_blk.shape[-1] ** -0.5
        scores = (q_blk @ k_pre.transpose(-1, -2)) * scale  # (N, H, Q, K)
        rows = torch.arange(start, start + q_blk.shape[2], device=q_blk.device)
        future = torch.arange(k_pre.shape[2], device=q_blk.device)[None, :] > rows[:, None]
        scores = scores.masked_fill(future, float("-inf"))
        if lse_blk is None:
            lse_blk = scores.logsumexp(-1)
        return torch.exp(scores - lse_blk[..., None]), lse_blk

    def forward(self, q, k, v):
        work = torch.promote_types(q.dtype, torch.float32)
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:3], dtype=work)  # (N, H, M)
        for a, b in self._blocks(q):
            p, lse[:, :, a:b] = self._probs(q[:, :, a:b].to(work), k[:, :, :b].to(work), a)
            out[:, :, a:b] = (p @ v[:, :, :b].to(work)).to(q.dtype)
        return out, lse, None

    def backward(self, dout, q, k, v, out, lse, state=None):
        work = torch.promote_types(q.dtype, torch.float32)
        scale = q.shape[-1] ** -0.5
        dq = torch.empty_like(q, dtype=work)
        dk, dv = torch.zeros_like(k, dtype=work), torch.zeros_like(v, dtype=work)
        # the row term of the softmax gradient, from the merged output
        delta = (dout.to(work) * out.to(work)).sum(-1)  # (N, H, M)
        for a, b in self._blocks(q):
            q_blk, k_pre, v_pre = q[:, :, a:b].to(work), k[:, :, :b].to(work), v[:, :, :b].to(work)
            g = dout[:, :, a:b].to(work)
            p, _ = self._probs(q_blk, k_pre, a, lse[:, :, a:b].to(work))  # (N, H, Q, b)
            dv[:, :, :b] += p.transpose(-1, -2) @ g
            ds = p * (g @ v_pre.transpose(-1, -2) - delta[:, :, a:b, None])
            dq[:, :, a:b] = (ds @ k_pre) * scale
            dk[:, :, :b] += (ds.transpose(-1, -2) @ q_blk) * scale
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class CpuFlashPieces:
    """torch's fused CPU flash-attention kernel, which returns and takes the log-sum-exp."""

    name = "torch CPU flash kernel"

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype in (torch.float32, torch.float64, *HALF)

    def forward(self, q, k, v):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)
        return out, lse, None

    def backward(self, dout, q, k, v, out, lse, state=None):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout, q, k, v, out, lse, 0.0, True)


class TorchCudaFlashPieces:
    """torch's CUDA flash kernel (SDPA's FlashAttention-2), (B, H, L, Dh) layout, fp16/bf16.

    forward_op / backward_op: aten::_scaled_dot_product_flash_attention and its _backward (or shims).
    The forward's extra outputs (cumulative lengths, max lengths, RNG state) go back to the
    backward unchanged, as SDPA's own autograd formula passes them.
    """

    name = "torch CUDA flash kernel (SDPA)"

    def __init__(self, forward_op, backward_op):
        self.forward_op, self.backward_op = forward_op, backward_op

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype in HALF

    def forward(self, q, k, v):
        _check_half(self.name, q)
        dh = q.shape[-1]
        res = self.forward_op(_pad_head_dim(q), _pad_head_dim(k), _pad_head_dim(v), 0.0, True, False,
                              scale=dh ** -0.5)
        out, lse = res[0], res[1]
        # (cum_seq_q, cum_seq_k, max_q, max_k, philox_seed, philox_offset)
        return out[..., :dh], lse[..., :q.shape[2]], tuple(res[2:8])

    def backward(self, dout, q, k, v, out, lse, state):
        dh = q.shape[-1]
        cum_q, cum_k, max_q, max_k, seed, offset = state
        grads = self.backward_op(_pad_head_dim(dout), _pad_head_dim(q), _pad_head_dim(k), _pad_head_dim(v),
                                 _pad_head_dim(out), lse.contiguous(), cum_q, cum_k, max_q, max_k, 0.0, True,
                                 seed, offset, scale=dh ** -0.5)
        return tuple(g[..., :dh] for g in grads)


class FlashAttnPieces:
    """flash-attn 2.7+ forward/backward functions, (B, L, H, Dh) layout, fp16/bf16.

    forward_fn(q, k, v, dropout_p, softmax_scale, causal, window_size_left, window_size_right,
               softcap, alibi_slopes, return_softmax) -> (out, softmax_lse, S_dmask, rng_state)
    backward_fn(dout, q, k, v, out, softmax_lse, dq, dk, dv, dropout_p, softmax_scale, causal,
                window_size_left, window_size_right, softcap, alibi_slopes, deterministic,
                rng_state) -> softmax_d, writing dq, dk, dv
    """

    name = "flash-attn"

    def __init__(self, forward_fn, backward_fn):
        self.forward_fn, self.backward_fn = forward_fn, backward_fn

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype in HALF

    @staticmethod
    def _layout(t):  # (N, H, M, Dh) -> padded (N, M, H, Dh8) view, unit last stride
        return _pad_head_dim(t).transpose(1, 2)

    def forward(self, q, k, v):
        _check_half(self.name, q)
        dh = q.shape[-1]
        out, lse, _, rng_state = self.forward_fn(self._layout(q), self._layout(k), self._layout(v), 0.0,
                                                 dh ** -0.5, True, -1, -1, 0.0, None, False)
        return out.transpose(1, 2)[..., :dh], lse, rng_state

    def backward(self, dout, q, k, v, out, lse, state):
        dh = q.shape[-1]
        q8, k8, v8 = self._layout(q), self._layout(k), self._layout(v)
        dq, dk, dv = torch.empty_like(q8), torch.empty_like(k8), torch.empty_like(v8)
        self.backward_fn(self._layout(dout), q8, k8, v8, self._layout(out), lse.contiguous(), dq, dk, dv,
                         0.0, dh ** -0.5, True, -1, -1, 0.0, None, False, state)
        return tuple(g.transpose(1, 2)[..., :dh] for g in (dq, dk, dv))


def pick_pieces(backends, dtype: torch.dtype):
    """The first backend that runs this dtype (the list ends with one that runs every dtype)."""
    for backend in backends:
        if backend.supports(dtype):
            return backend
    names = ", ".join(b.name for b in backends) or "none"
    raise TypeError(f"fusion pieces: no backend for {dtype} among: {names}")
