"""Fakes of the CUDA kernels with the packages' exact signatures, computing with the reference.

They raise on the layout / dtype preconditions the real kernels enforce (mamba_ssm 2.x
selective_scan_fn, causal-conv1d 1.x causal_conv1d_fn, flash-attn 2.x flash_attn_func), so the
CUDA glue can be driven on CPU: a missing transpose or cast fails here, not on the first GPU run.
"""
import torch

from janus_pretrain.model.kernels import CudaKernels, Kernels
from janus_pretrain.model.scan import selective_scan_ref

REF = Kernels(scan_chunk=8, fusion_query_block=5)


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


def shim_cuda_kernels() -> CudaKernels:
    """The CUDA kernel set with every package kernel replaced by its shim."""
    return CudaKernels(selective_scan_fn, causal_conv1d_fn, flash_attn_func,
                       scan_chunk=8, fusion_query_block=5)
