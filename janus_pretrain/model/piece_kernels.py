"""Causal attention kernels that expose their log-sum-exp: the pieces of the fusion attention.

Every backend computes causal softmax attention (query i reads keys 0..i), or with causal=False
full attention (every query reads every key: the off-diagonal slice pairs of context
parallelism, model/context_parallel.py):

    forward(q, k, v, scale, causal=True) -> (out, lse, state)   q, k, v, out (N, H, M, Dh); lse (N, H, M), fp32
                                                     (fp64 for fp64 inputs); state: what backward needs
    backward(dout, q, k, v, out, lse, state, scale, causal=True) -> (dq, dk, dv)

`scale` is 1/sqrt(model head dim): the caller pads the head dim to the backend's
head_dim_multiple with zero columns (the CUDA flash kernels take multiples of 8; ours are 18 at
D=72 and 36 at D=144), which changes neither q.k nor the first columns of p @ v. Padding once in
the caller's layout copy saves a padded copy of every input in every kernel call.

backward is called with the MERGED out and lse of every piece a row reads (fusion_pieces.py), not
with the piece's own: the softmax gradient of a key set is P * (dP - rowsum(dout * out)) with
P = exp(scores * scale - lse), and both the normaliser lse and rowsum(dout * out) belong to the
whole row. Given the merged pair, each piece's kernel backward returns exactly its share of the
gradient (the ring-attention recipe), so no piece needs a mask beyond its own causal one.

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

HALF = (torch.float16, torch.bfloat16)
# score elements of one MathPieces query block (fp32: 64 MiB), whatever L is
MATH_SCORE_BUDGET = 1 << 24


def _check_head_dim(name: str, q: torch.Tensor, multiple: int) -> None:
    if q.shape[-1] % multiple:
        raise ValueError(f"fusion pieces: {name} needs the head dim padded to a multiple of {multiple}, "
                         f"got {q.shape[-1]} (fusion_pieces.to_streams pads it)")


def _check_half(name: str, q: torch.Tensor) -> None:
    if q.dtype not in HALF:
        raise TypeError(f"fusion pieces: {name} runs in fp16/bf16 only, got {q.dtype}; "
                        "use MathPieces for other dtypes (select_kernels does this per dtype)")


class MathPieces:
    """Causal attention with (out, lse) in plain torch ops, query block by query block."""

    name = "math"
    head_dim_multiple = 1

    def __init__(self, score_budget: int = MATH_SCORE_BUDGET):
        self.score_budget = score_budget

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype.is_floating_point

    def _blocks(self, q, k, causal):
        """Row blocks whose scores stay within score_budget: causal rows see at most m keys, full
        rows every key of k (more or fewer than m under context parallelism, where k is another rank's block)."""
        n, h, m, _ = q.shape
        width = m if causal else k.shape[2]
        rows = max(1, min(m, self.score_budget // max(n * h * width, 1)))
        return [(a, min(a + rows, m)) for a in range(0, m, rows)]

    @staticmethod
    def _probs(q_blk, k_pre, start, scale, lse_blk=None, causal=True):
        """exp(scores - lse) of rows start.. over keys 0..end-1 (causal: masked beyond the row), and lse."""
        scores = (q_blk @ k_pre.transpose(-1, -2)) * scale  # (N, H, Q, K)
        if causal:
            rows = torch.arange(start, start + q_blk.shape[2], device=q_blk.device)
            future = torch.arange(k_pre.shape[2], device=q_blk.device)[None, :] > rows[:, None]
            scores = scores.masked_fill(future, float("-inf"))
        if lse_blk is None:
            lse_blk = scores.logsumexp(-1)
        return torch.exp(scores - lse_blk[..., None]), lse_blk

    def forward(self, q, k, v, scale, causal=True):
        work = torch.promote_types(q.dtype, torch.float32)
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:3], dtype=work)  # (N, H, M)
        for a, b in self._blocks(q, k, causal):
            keys = b if causal else k.shape[2]
            p, lse[:, :, a:b] = self._probs(q[:, :, a:b].to(work), k[:, :, :keys].to(work), a, scale, causal=causal)
            out[:, :, a:b] = (p @ v[:, :, :keys].to(work)).to(q.dtype)
        return out, lse, None

    def backward(self, dout, q, k, v, out, lse, state, scale, causal=True):
        work = torch.promote_types(q.dtype, torch.float32)
        dq = torch.empty_like(q, dtype=work)
        dk, dv = torch.zeros_like(k, dtype=work), torch.zeros_like(v, dtype=work)
        # the row term of the softmax gradient, from the merged output
        delta = (dout.to(work) * out.to(work)).sum(-1)  # (N, H, M)
        for a, b in self._blocks(q, k, causal):
            keys = b if causal else k.shape[2]
            q_blk, k_pre, v_pre = q[:, :, a:b].to(work), k[:, :, :keys].to(work), v[:, :, :keys].to(work)
            g = dout[:, :, a:b].to(work)
            p, _ = self._probs(q_blk, k_pre, a, scale, lse[:, :, a:b].to(work), causal)  # (N, H, Q, keys)
            dv[:, :, :keys] += p.transpose(-1, -2) @ g
            ds = p * (g @ v_pre.transpose(-1, -2) - delta[:, :, a:b, None])
            dq[:, :, a:b] = (ds @ k_pre) * scale
            dk[:, :, :keys] += (ds.transpose(-1, -2) @ q_blk) * scale
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class CpuFlashPieces:
    """torch's fused CPU flash-attention kernel, which returns and takes the log-sum-exp."""

    name = "torch CPU flash kernel"
    head_dim_multiple = 1

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype in (torch.float32, torch.float64, *HALF)

    def forward(self, q, k, v, scale, causal=True):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
        return out, lse, None

    def backward(self, dout, q, k, v, out, lse, state, scale, causal=True):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout, q, k, v, out, lse, 0.0, causal, scale=scale)


class TorchCudaFlashPieces:
    """torch's CUDA flash kernel (SDPA's FlashAttention-2), (B, H, L, Dh) layout, fp16/bf16.

    forward_op / backward_op: aten::_scaled_dot_product_flash_attention and its _backward (or shims).
    The forward's extra outputs (cumulative lengths, max lengths, RNG state) go back to the
    backward unchanged, as SDPA's own autograd formula passes them.
    """

    name = "torch CUDA flash kernel (SDPA)"
    head_dim_multiple = 8

    def __init__(self, forward_op, backward_op):
        self.forward_op, self.backward_op = forward_op, backward_op

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype in HALF

    def forward(self, q, k, v, scale, causal=True):
        _check_half(self.name, q)
        _check_head_dim(self.name, q, self.head_dim_multiple)
        res = self.forward_op(q, k, v, 0.0, causal, False, scale=scale)
        # state: (cum_seq_q, cum_seq_k, max_q, max_k, philox_seed, philox_offset)
        return res[0], res[1], tuple(res[2:8])

    def backward(self, dout, q, k, v, out, lse, state, scale, causal=True):
        cum_q, cum_k, max_q, max_k, seed, offset = state
        return self.backward_op(dout, q, k, v, out, lse.contiguous(), cum_q, cum_k, max_q, max_k, 0.0, causal,
                                seed, offset, scale=scale)


class FlashAttnPieces:
    """flash-attn 2.7+ forward/backward functions, (B, L, H, Dh) layout, fp16/bf16.

    forward_fn(q, k, v, dropout_p, softmax_scale, causal, window_size_left, window_size_right,
               softcap, alibi_slopes, return_softmax) -> (out, softmax_lse, S_dmask, rng_state)
    backward_fn(dout, q, k, v, out, softmax_lse, dq, dk, dv, dropout_p, softmax_scale, causal,
                window_size_left, window_size_right, softcap, alibi_slopes, deterministic,
                rng_state) -> softmax_d, writing dq, dk, dv
    Our (N, H, M, Dh) tensors reach it as transposed views: flash-attn only needs a unit last stride.
    """

    name = "flash-attn"
    head_dim_multiple = 8

    def __init__(self, forward_fn, backward_fn):
        self.forward_fn, self.backward_fn = forward_fn, backward_fn

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype in HALF

    def forward(self, q, k, v, scale, causal=True):
        _check_half(self.name, q)
        _check_head_dim(self.name, q, self.head_dim_multiple)
        out, lse, _, rng_state = self.forward_fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0,
                                                 scale, causal, -1, -1, 0.0, None, False)
        return out.transpose(1, 2), lse, rng_state

    def backward(self, dout, q, k, v, out, lse, state, scale, causal=True):
        q_t, k_t, v_t = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (N, M, H, Dh)
        dq, dk, dv = torch.empty_like(q_t), torch.empty_like(k_t), torch.empty_like(v_t)
        self.backward_fn(dout.transpose(1, 2), q_t, k_t, v_t, out.transpose(1, 2), lse.contiguous(), dq, dk, dv,
                         0.0, scale, causal, -1, -1, 0.0, None, False, state)
        return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)


def pick_pieces(backends, dtype: torch.dtype):
    """The first backend that runs this dtype (the list ends with one that runs every dtype)."""
    for backend in backends:
        if backend.supports(dtype):
            return backend
    names = ", ".join(b.name for b in backends) or "none"
    raise TypeError(f"fusion pieces: no backend for {dtype} among: {names}")
