"""Janus fusion attention as causal pieces merged by log-sum-exp (model/fusion_pieces.py) against
the exact query-blocked reference: forward and backward per backend and dtype, float64 gradcheck,
the merge's empty-row rule, the glue of the CUDA backends through shims, and (GPU only) the real
CUDA kernels.

Tolerances: fp32 1e-5 (both sides are exact up to fp32 rounding); bf16 inputs against the fp32
reference on the same bf16-rounded inputs: outputs 2e-2, gradients 3e-2 (abs and rel), about twice
what the reference itself shows when run in bf16 (7e-3 on outputs, 1.2e-2 on gradients).
"""
import pytest
import torch

from janus_pretrain.model.fusion_attention import fusion_attention_reference
from janus_pretrain.model.fusion_pieces import (from_streams, fusion_attention_pieces, merge_attention,
                                                to_streams)
from janus_pretrain.model.kernels import select_kernels
from janus_pretrain.model.piece_kernels import (CpuFlashPieces, FlashAttnPieces, MathPieces, TorchCudaFlashPieces,
                                                pick_pieces)
from kernel_shims import (_flash_attn_backward, _flash_attn_forward, sdpa_flash_backward,
                          sdpa_flash_forward)

HEADS, DH = 3, 18  # 18: the 72-dim model's head dim, not a multiple of 8 (the CUDA glue pads it)
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 3e-2)}  # (outputs, gradients)
BACKENDS = {
    "cpu-flash": CpuFlashPieces,
    "math": lambda: MathPieces(score_budget=40),  # tiny blocks: several per call
    "flash-attn shims": lambda: FlashAttnPieces(_flash_attn_forward, _flash_attn_backward),
    "torch-cuda-flash shims": lambda: TorchCudaFlashPieces(sdpa_flash_forward, sdpa_flash_backward),
}
HALF_ONLY = {"flash-attn shims", "torch-cuda-flash shims"}


def _inputs(seq_len, batch=2, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q, k, v, grad = (torch.randn(batch, HEADS, 2 * seq_len, DH, generator=g) for _ in range(4))
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)], grad.to(device=device, dtype=dtype)


def _out_and_grads(fn, qkv, grad):
    leaves = [t.detach().clone().requires_grad_() for t in qkv]
    out = fn(*leaves)
    return out, torch.autograd.grad(out, leaves, grad.to(out.dtype))


def _reference(qkv, grad, seq_len):
    """The oracle in fp32 on the same (possibly bf16-rounded) inputs; odd query block on purpose."""
    return _out_and_grads(lambda q, k, v: fusion_attention_reference(q, k, v, seq_len, query_block=7),
                          [t.float() for t in qkv], grad.float())


def _assert_matches(got, want, dtype):
    out_tol, grad_tol = TOL[dtype]
    (out, grads), (ref_out, ref_grads) = got, want
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    torch.testing.assert_close(out.float(), ref_out, rtol=out_tol, atol=out_tol)
    for name, a, b in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(a.float(), b, rtol=grad_tol, atol=grad_tol, msg=f"d{name}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seq_len", [1, 2, 3, 4, 5, 17, 40])
def test_pieces_match_reference_forward_and_backward(backend, dtype, seq_len):
    if backend in HALF_ONLY and dtype == torch.float32:
        pytest.skip("the CUDA flash kernels run fp16/bf16 only (fp32 goes to the math pieces)")
    qkv, grad = _inputs(seq_len, seed=seq_len, dtype=dtype)
    kernel = BACKENDS[backend]()
    got = _out_and_grads(lambda q, k, v: fusion_attention_pieces(q, k, v, seq_len, kernel), qkv, grad)
    _assert_matches(got, _reference(qkv, grad, seq_len), dtype)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_softmax_scale_of_a_padded_head_dim_reaches_every_path(backend):
    """model.fusion_scale_dim (the official JanusDNA's zero-padded fusion head dim) sets the scale;
    pieces, reference and FlexAttention agree on it, and it equals attention over zero-padded heads
    at their default scale, which is what the official code computes."""
    dtype = torch.bfloat16 if backend in HALF_ONLY else torch.float32
    seq_len, padded = 9, 32
    qkv, grad = _inputs(seq_len, seed=11, dtype=dtype)
    scale = padded ** -0.5
    kernel = BACKENDS[backend]()
    got = _out_and_grads(lambda q, k, v: fusion_attention_pieces(q, k, v, seq_len, kernel, scale), qkv, grad)
    want = _out_and_grads(lambda q, k, v: fusion_attention_reference(q, k, v, seq_len, query_block=5, scale=scale),
                          [t.float() for t in qkv], grad.float())
    _assert_matches(got, want, dtype)
    if dtype == torch.float32:
        from torch.nn.attention.flex_attention import flex_attention

        from janus_pretrain.model.fusion_attention import fusion_attention_flex, janus_block_mask

        padded_qkv = [torch.nn.functional.pad(t, (0, padded - DH)) for t in qkv]
        with torch.no_grad():
            official = flex_attention(*padded_qkv, block_mask=janus_block_mask(seq_len, "cpu"))[..., :DH]
            torch.testing.assert_close(fusion_attention_flex(*qkv, seq_len, scale=scale), official, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(want[0], official, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpu-flash", "math"])
@pytest.mark.parametrize("seq_len", [1, 2, 3, 5])
def test_gradcheck_float64(backend, seq_len):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 2 * seq_len, 4, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    kernel = BACKENDS[backend]()
    assert torch.autograd.gradcheck(lambda *t: fusion_attention_pieces(*t, seq_len, kernel), (q, k, v))


def test_stream_layout_round_trips_and_reverses_the_backward_stream():
    x = torch.arange(2 * 3 * 10 * 1, dtype=torch.float32).view(2, 3, 10, 1)
    streams = to_streams(x, 5)  # (4, 3, 5, 1)
    assert torch.equal(streams[:2], x[:, :, :5])
    assert torch.equal(streams[2:], x[:, :, 5:].flip(2))
    assert torch.equal(from_streams(streams, 2), x)
    padded = to_streams(x, 5, 8)  # the CUDA flash kernels' head-dim multiple
    assert torch.equal(padded[..., :1], streams) and not padded[..., 1:].any()
    assert torch.equal(from_streams(padded, 2, 1), x) and from_streams(padded, 2, 1).is_contiguous()


def test_merge_ignores_rows_without_keys_even_if_their_output_is_nan():
    g = torch.Generator().manual_seed(0)
    out_a, out_b = torch.randn(1, 1, 4, 3, generator=g), torch.randn(1, 1, 4, 3, generator=g)
    lse_a = torch.tensor([[[0.5, float("-inf"), 1.0, float("-inf")]]])
    lse_b = torch.tensor([[[float("-inf"), 2.0, 0.0, float("-inf")]]])
    out_a[0, 0, 1] = out_a[0, 0, 3] = float("nan")  # what some kernels leave in a row with no key
    out_b[0, 0, 0] = out_b[0, 0, 3] = float("nan")
    out, lse = merge_attention(out_a, lse_a, out_b, lse_b)
    assert not out.isnan().any()
    torch.testing.assert_close(out[0, 0, 0], out_a[0, 0, 0])
    torch.testing.assert_close(out[0, 0, 1], out_b[0, 0, 1])
    wa, wb = torch.tensor(1.0).exp(), torch.tensor(0.0).exp()
    torch.testing.assert_close(out[0, 0, 2], (wa * out_a[0, 0, 2] + wb * out_b[0, 0, 2]) / (wa + wb))
    assert torch.equal(out[0, 0, 3], torch.zeros(3)) and lse[0, 0, 3] == float("-inf")
    torch.testing.assert_close(lse[0, 0, :3], torch.tensor([0.5, 2.0, torch.logaddexp(torch.tensor(1.0),
                                                                                 torch.tensor(0.0)).item()]))


def test_merge_of_two_key_sets_is_attention_over_their_union():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 2, 6, 5, generator=g, dtype=torch.float64)
    k, v = torch.randn(2, 2, 12, 5, generator=g, dtype=torch.float64), torch.randn(2, 2, 12, 5, generator=g,
                                                                                  dtype=torch.float64)
    parts = [MathPieces().forward(q, k[:, :, i:i + 6], v[:, :, i:i + 6], 5 ** -0.5)[:2] for i in (0, 6)]
    out, lse = merge_attention(*parts[0], *parts[1])
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    mask = torch.cat([causal, causal], dim=1)  # each row reads keys <= itself in both halves
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, want)


def test_math_pieces_keep_each_score_block_within_budget_over_more_keys_than_queries():
    """A full piece over K = 3M keys (a full piece call on more keys than
    queries): blocks are sized by the keys they read, and blocking changes no value."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, m, 8, generator=g, dtype=torch.float64, requires_grad=True)
               for m in (40, 120, 120))
    budget = 2 * 120 * 10  # ten rows of 120 keys per block
    small, whole = MathPieces(score_budget=budget), MathPieces(score_budget=1 << 30)
    blocks = small._blocks(q, k, causal=False)
    assert max(b - a for a, b in blocks) == 10 and all(2 * 120 * (b - a) <= budget for a, b in blocks)
    assert max(b - a for a, b in small._blocks(q, q, causal=True)) == 30  # causal rows see at most M keys
    (out_s, lse_s, _), (out_w, lse_w, _) = small.forward(q, k, v, 0.3, causal=False), whole.forward(q, k, v, 0.3, causal=False)
    torch.testing.assert_close(out_s, out_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(lse_s, lse_w, rtol=0, atol=1e-12)
    dout = torch.randn_like(out_w)
    for a, b in zip(small.backward(dout, q, k, v, out_s, lse_s, None, 0.3, causal=False),
                    whole.backward(dout, q, k, v, out_w, lse_w, None, 0.3, causal=False)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_pick_pieces_falls_back_by_dtype_and_says_what_is_missing():
    flash, math = BACKENDS["flash-attn shims"](), MathPieces()
    assert pick_pieces([flash, math], torch.bfloat16) is flash
    assert pick_pieces([flash, math], torch.float32) is math
    with pytest.raises(TypeError, match="no backend for torch.float32 among: flash-attn"):
        pick_pieces([flash], torch.float32)
    with pytest.raises(TypeError, match="fp16/bf16 only"):
        flash.forward(*(torch.randn(1, 1, 3, 8) for _ in range(3)), 8 ** -0.5)


def test_shims_check_what_the_cuda_kernels_check():
    # the shims must be able to fail, or the glue tests above prove nothing
    q = torch.randn(1, 5, 2, 18, dtype=torch.bfloat16)  # head dim 18: not padded
    with pytest.raises(AssertionError, match="multiple of 8"):
        _flash_attn_forward(q, q, q, 0.0, 18 ** -0.5, True, -1, -1, 0.0, None, False)
    q8 = torch.randn(1, 5, 2, 24, dtype=torch.bfloat16)
    with pytest.raises(AssertionError, match="scale"):
        sdpa_flash_forward(q8.transpose(1, 2), q8.transpose(1, 2), q8.transpose(1, 2), 0.0, True)
    out, lse, _, rng = _flash_attn_forward(q8, q8, q8, 0.0, 18 ** -0.5, True, -1, -1, 0.0, None, False)
    dq = torch.empty_like(q8)
    with pytest.raises(AssertionError, match=r"softmax_lse \(B, H, L\)"):
        _flash_attn_backward(out, q8, q8, q8, out, lse.transpose(1, 2).contiguous(), dq, dq.clone(), dq.clone(),
                             0.0, 18 ** -0.5, True, -1, -1, 0.0, None, False, rng)


def test_no_row_is_left_without_keys_and_output_is_finite_at_tiny_lengths():
    for seq_len in (1, 2, 3):
        qkv, grad = _inputs(seq_len, batch=1, seed=5)
        out, grads = _out_and_grads(lambda q, k, v: fusion_attention_pieces(q, k, v, seq_len, CpuFlashPieces()),
                                    qkv, grad)
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)


def test_shape_errors_are_clear():
    qkv, _ = _inputs(4)
    with pytest.raises(ValueError, match=r"2 \* seq_len"):
        fusion_attention_pieces(*qkv, 5, CpuFlashPieces())
    with pytest.raises(ValueError, match="share shape"):
        fusion_attention_pieces(qkv[0], qkv[1][:, :1], qkv[2], 4, CpuFlashPieces())


# ----------------------------------------------------------------------------- real CUDA kernels

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("seq_len", [1, 3, 1000, 1027, 8192])
def test_cuda_pieces_match_reference(dtype, seq_len):
    """The fusion path select_kernels picks on this GPU (flash-attn, or torch's CUDA flash kernel;
    math pieces in fp32) against the reference computed on the same GPU in fp32."""
    kernels = select_kernels("auto", "cuda")
    assert kernels.fusion == "pieces"
    qkv, grad = _inputs(seq_len, batch=1, seed=seq_len, dtype=dtype, device="cuda")
    got = _out_and_grads(lambda q, k, v: kernels.fusion_attention(q, k, v, seq_len), qkv, grad)
    want = _out_and_grads(lambda q, k, v: fusion_attention_reference(q, k, v, seq_len, query_block=512),
                          [t.float() for t in qkv], grad.float())
    _assert_matches(got, want, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["torch-cuda-flash", "flash-attn"])
def test_each_cuda_flash_backend_matches_reference(backend):
    if backend == "flash-attn":
        flash_attn = pytest.importorskip("flash_attn.flash_attn_interface")
        kernel = FlashAttnPieces(flash_attn._flash_attn_forward, flash_attn._flash_attn_backward)
    else:
        kernel = TorchCudaFlashPieces(torch.ops.aten._scaled_dot_product_flash_attention,
                                      torch.ops.aten._scaled_dot_product_flash_attention_backward)
    seq_len = 1531
    qkv, grad = _inputs(seq_len, batch=2, seed=11, dtype=torch.bfloat16, device="cuda")
    got = _out_and_grads(lambda q, k, v: fusion_attention_pieces(q, k, v, seq_len, kernel), qkv, grad)
    want = _out_and_grads(lambda q, k, v: fusion_attention_reference(q, k, v, seq_len, query_block=512),
                          [t.float() for t in qkv], grad.float())
    _assert_matches(got, want, torch.bfloat16)
