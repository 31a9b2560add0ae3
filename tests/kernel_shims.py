"""Fakes of the CUDA kernels with the packages' exact signatures, computing with the reference.

They raise on the layout / dtype preconditions the real kernels enforce (mamba_ssm 2.x
selective_scan_fn, causal-conv1d 1.x causal_conv1d_fn, flash-attn 2.7+ flash_attn_func,
_flash_attn_forward and _flash_attn_backward, torch's aten::_scaled_dot_product_flash_attention
and its _backward on CUDA), so the CUDA glue can be driven on CPU: a missing transpose, pad or
cast fails here, not on the first GPU run.
"""
import torch

from janus_pretrain.model.kernels import Kernels
from janus_pretrain.model.piece_kernels import FlashAttnPieces, MathPieces, TorchCudaFlashPieces
from janus_pretrain.model.scan import selective_scan_ref

REF = Kernels(scan_chunk=8, fusion_query_block=5)
_CPU_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_CPU_FLASH_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    for name, t in (("u", u), ("delta", delta), ("z", z)):
        if t is not None:
            assert t.dim() == 3 and t.stride(-1) == 1, f"{name} must be (B, D, L), unit last stride"
    assert delta.dtype == u.dtype and (z is None or z.dtype == u.dtype)
    assert A.dtype == torch.float32 and A.dim() == 2 and A.shape[0] == u.shape[1]
    for name, t in (("B", B), ("C", C)):
        # variable B/C: (B, N, L) or (B, G, N, L), in the input dtype
        assert t.dim() in (3, 4) and t.shape[-1] == u.shape[2] and t.shape[-2] == A.shape[1], name
        assert t.dtype == u.dtype and t.stride(-1) == 1, name
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        assert t is None or (t.dtype == torch.float32 and t.shape == (u.shape[1],)), name
    assert not return_last_state
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None,
                     return_final_states=False, final_states_out=None, activation=None):
    assert activation in (None, "silu", "swish")
    assert x.dim() == 3 and (x.stride(2) == 1 or x.stride(1) == 1), "x (B, D, L), stride(2) or (1) == 1"
    assert weight.dim() == 2 and weight.shape[0] == x.shape[1], "weight must be (D, W)"
    assert 2 <= weight.shape[1] <= 4, "causal_conv1d supports width 2..4"
    assert bias is None or bias.shape == (x.shape[1],)
    assert seq_idx is None and initial_states is None and not return_final_states
    return REF.causal_conv1d(x, weight, bias, activation)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                    return_attn_probs=False):
    for t in (q, k, v):
        assert t.dtype in (torch.float16, torch.bfloat16), "FlashAttention only supports fp16/bf16"
        assert t.dim() == 4 and t.stride(-1) == 1 and t.shape[-1] <= 256, "(B, L, H, Dh<=256)"
    assert q.dtype == k.dtype == v.dtype and causal and dropout_p == 0.0
    assert softmax_scale is None or softmax_scale == q.shape[-1] ** -0.5
    return REF.causal_attention(q, k, v)


def _flash_preconditions(*tensors):
    """What flash-attn's mha_fwd/mha_bwd and torch's CUDA flash kernel check on their inputs."""
    for t in tensors:
        assert t.dtype in (torch.float16, torch.bfloat16), "FlashAttention only supports fp16/bf16"
        assert t.dim() == 4 and t.stride(-1) == 1, "4-d, unit last stride"
        assert t.shape[-1] % 8 == 0 and t.shape[-1] <= 256, "head dim a multiple of 8, <= 256 (pad it)"
    assert len({t.dtype for t in tensors}) == 1, "one dtype"


def _check_shapes(q, k, v, causal, seq_dim):
    """q and k/v may differ in length (context parallelism's full calls on other ranks' keys); a
    causal call must be square: flash-attn aligns a non-square causal mask bottom-right, torch's
    kernels top-left, so the glue only calls causal on the diagonal block."""
    assert k.shape == v.shape, "k and v alike"
    assert [s for i, s in enumerate(q.shape) if i != seq_dim] == [s for i, s in enumerate(k.shape) if i != seq_dim]
    assert not causal or q.shape[seq_dim] == k.shape[seq_dim], "causal only on a square (alignment differs)"


def _flash_attn_forward(q, k, v, dropout_p, softmax_scale, causal, window_size_left, window_size_right,
                        softcap, alibi_slopes, return_softmax):
    """flash-attn 2.7+: (B, L, H, Dh) -> (out, softmax_lse (B, H, L) fp32, S_dmask, rng_state)."""
    _flash_preconditions(q, k, v)
    _check_shapes(q, k, v, causal, seq_dim=1)
    assert isinstance(softmax_scale, float), "the caller computes the scale (of the unpadded head dim)"
    assert dropout_p == 0.0 and (window_size_left, window_size_right) == (-1, -1)
    assert softcap == 0.0 and alibi_slopes is None and not return_softmax
    out, lse = _CPU_FLASH(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0, causal, scale=softmax_scale)
    rng_state = torch.zeros(2, dtype=torch.int64)
    return out.transpose(1, 2).contiguous(), lse.contiguous(), torch.empty(0, dtype=q.dtype), rng_state


def _flash_attn_backward(dout, q, k, v, out, softmax_lse, dq, dk, dv, dropout_p, softmax_scale, causal,
                         window_size_left, window_size_right, softcap, alibi_slopes, deterministic,
                         rng_state=None):
    """flash-attn 2.7+: writes dq, dk, dv (preallocated like q, k, v); returns softmax_d."""
    _flash_preconditions(dout, q, k, v, out, dq, dk, dv)
    assert dout.shape == q.shape == out.shape == dq.shape and k.shape == dk.shape and v.shape == dv.shape
    _check_shapes(q, k, v, causal, seq_dim=1)
    assert softmax_lse.dtype == torch.float32 and softmax_lse.is_contiguous()
    assert softmax_lse.shape == (q.shape[0], q.shape[2], q.shape[1]), "softmax_lse (B, H, L)"
    assert isinstance(softmax_scale, float) and dropout_p == 0.0
    assert rng_state is not None and rng_state.dtype == torch.int64, "the forward's rng_state"
    grads = _CPU_FLASH_BACKWARD(*(t.transpose(1, 2) for t in (dout, q, k, v, out)), softmax_lse, 0.0, causal,
                                scale=softmax_scale)
    for dst, src in zip((dq, dk, dv), grads):
        dst.copy_(src.transpose(1, 2))
    return torch.zeros(q.shape[0], q.shape[2], q.shape[1], dtype=torch.float32)


def sdpa_flash_forward(query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *,
                       scale=None):
    """aten::_scaled_dot_product_flash_attention (CUDA): (B, H, L, Dh) -> 9 outputs."""
    _flash_preconditions(query, key, value)
    _check_shapes(query, key, value, is_causal, seq_dim=2)
    assert dropout_p == 0.0 and not return_debug_mask
    assert isinstance(scale, float), "with a padded head dim the default scale would be wrong"
    out, lse = _CPU_FLASH(query, key, value, 0.0, is_causal, scale=scale)
    seed, offset = torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)
    # the dense (not nested) path returns undefined cumulative lengths: None in Python
    return out, lse, None, None, query.shape[2], key.shape[2], seed, offset, torch.empty(0, dtype=query.dtype)


def sdpa_flash_backward(grad_out, query, key, value, out, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k,
                        dropout_p, is_causal, philox_seed, philox_offset, *, scale=None):
    _flash_preconditions(grad_out, query, key, value, out)
    assert logsumexp.dtype == torch.float32 and logsumexp.shape == query.shape[:3]
    assert cum_seq_q is None and cum_seq_k is None and (max_q, max_k) == (query.shape[2], key.shape[2])
    assert philox_seed.dtype == philox_offset.dtype == torch.int64, "the forward's RNG state"
    _check_shapes(query, key, value, is_causal, seq_dim=2)
    assert dropout_p == 0.0 and isinstance(scale, float)
    return _CPU_FLASH_BACKWARD(grad_out, query, key, value, out, logsumexp, 0.0, is_causal, scale=scale)


def shim_cuda_kernels(fusion: str = "pieces") -> Kernels:
    """The kernel set of a GPU with every package, each package kernel replaced by its shim."""
    pieces = [FlashAttnPieces(_flash_attn_forward, _flash_attn_backward), MathPieces()]
    return Kernels(selective_scan_fn, causal_conv1d_fn, flash_attn_func, fusion=fusion, pieces=pieces,
                   scan_chunk=8, fusion_query_block=5)


def shim_torch_cuda_pieces() -> list:
    """Piece backends of a GPU without flash-attn, torch's CUDA flash kernel replaced by its shim."""
    return [TorchCudaFlashPieces(sdpa_flash_forward, sdpa_flash_backward), MathPieces()]


# kernel sets by name, for jobs that run in other processes (tests/cp_ranks.py)
SHIM_SETS = {"cuda-glue+shims": shim_cuda_kernels,
             "torch-cuda-glue+shims": lambda: Kernels(fusion="pieces", pieces=shim_torch_cuda_pieces())}
