"""Chunked selective scan vs the exact sequential recurrence, forward and backward."""
import pytest
import torch

from janus_pretrain.model import scan
from janus_pretrain.model.scan import selective_scan_chunked, selective_scan_ref

BATCH, DIM, STATE = 2, 5, 4


def _inputs(length, dtype=torch.float32, seed=0, delta_scale=0.5, options=True):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, fn=torch.randn):
        return (fn(*shape, generator=g) * scale).to(dtype).requires_grad_()

    args = dict(
        u=rand(BATCH, DIM, length),
        delta=rand(BATCH, DIM, length, scale=delta_scale, fn=torch.rand),
        # Mamba's A = -exp(A_log): strictly negative
        A=(-(torch.rand(DIM, STATE, generator=g) + 0.2)).requires_grad_(),
        B=rand(BATCH, STATE, length),
        C=rand(BATCH, STATE, length),
    )
    if options:
        args.update(
            D=torch.randn(DIM, generator=g).requires_grad_(),
            z=rand(BATCH, DIM, length),
            delta_bias=(torch.randn(DIM, generator=g) * 0.5).requires_grad_(),
            delta_softplus=True,
        )
    return args


def _grads(fn, args, grad_out, **kw):
    y = fn(**args, **kw)
    leaves = [v for v in args.values() if isinstance(v, torch.Tensor)]
    return y, torch.autograd.grad(y, leaves, grad_out)


def _rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("options", [True, False], ids=["D_z_bias_softplus", "bare"])
@pytest.mark.parametrize("length,chunk", [(1, 16), (7, 16), (16, 16), (37, 16), (64, 16),
                                          (100, 8), (300, 4)])
def test_chunked_matches_sequential_fp32(length, chunk, options):
    # (300, 4): 75 chunks -> 19 -> 5, so the recursive carry runs three levels deep
    args = _inputs(length, options=options)
    grad_out = torch.randn(BATCH, DIM, length, generator=torch.Generator().manual_seed(1))
    y_ref, g_ref = _grads(selective_scan_ref, args, grad_out)
    y, g = _grads(selective_scan_chunked, args, grad_out, chunk=chunk)
    assert y.dtype == torch.float32
    assert _rel_err(y, y_ref) < 1e-5
    for name, a, b in zip(args, g, g_ref):
        assert _rel_err(a, b) < 1e-5, name


@pytest.mark.parametrize("length", [33, 130])
def test_chunked_matches_sequential_bf16(length):
    args = _inputs(length, dtype=torch.bfloat16)
    grad_out = torch.randn(BATCH, DIM, length, generator=torch.Generator().manual_seed(1))
    grad_out = grad_out.to(torch.bfloat16)
    y_ref, g_ref = _grads(selective_scan_ref, args, grad_out)
    y, g = _grads(selective_scan_chunked, args, grad_out, chunk=16)
    assert y.dtype == torch.bfloat16
    # both compute in fp32 from the same bf16 inputs; the bf16 output rounding dominates
    assert _rel_err(y, y_ref) < 2e-2
    for name, a, b in zip(args, g, g_ref):
        assert a.dtype == b.dtype, name
        assert _rel_err(a, b) < 2e-2, name


def test_large_decay_is_finite_and_exact():
    # delta * A down to about -100 per step: the within-chunk decay underflows to 0, never inf
    args = _inputs(70, delta_scale=1.0, options=False)
    with torch.no_grad():
        args["delta"].mul_(0).add_(torch.linspace(1.0, 83.0, 70))
        args["A"].clamp_(max=-1.2)
    assert (args["delta"][..., None] * args["A"][:, None]).min() < -99
    grad_out = torch.randn(BATCH, DIM, 70, generator=torch.Generator().manual_seed(1))
    y_ref, g_ref = _grads(selective_scan_ref, args, grad_out)
    y, g = _grads(selective_scan_chunked, args, grad_out, chunk=16)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in g)
    assert _rel_err(y, y_ref) < 1e-5
    for name, a, b in zip(args, g, g_ref):
        assert _rel_err(a, b) < 1e-5, name


def test_channel_slabs_change_nothing(monkeypatch):
    # the scan splits channels into slabs to bound memory; one channel per slab must agree
    args = _inputs(50)
    grad_out = torch.randn(BATCH, DIM, 50, generator=torch.Generator().manual_seed(1))
    y_one, g_one = _grads(selective_scan_chunked, args, grad_out, chunk=8)
    monkeypatch.setattr(scan, "_SLAB_ELEMENTS", 1)
    assert len(scan._slabs(args["u"], args["A"])) == DIM
    y_sl, g_sl = _grads(selective_scan_chunked, args, grad_out, chunk=8)
    assert _rel_err(y_sl, y_one) < 1e-6
    for a, b in zip(g_sl, g_one):
        assert _rel_err(a, b) < 1e-6


def test_output_depends_only_on_the_past():
    # causality of the scan: changing step t changes nothing before t
    args = _inputs(40, options=False)
    with torch.no_grad():
        y0 = selective_scan_chunked(**args, chunk=8)
        args["u"][:, :, 21] += 3.0
        y1 = selective_scan_chunked(**args, chunk=8)
    assert torch.equal(y0[:, :, :21], y1[:, :, :21])
    assert not torch.allclose(y0[:, :, 21:], y1[:, :, 21:])


def test_grouped_bc_layout():
    args = _inputs(20, options=False)
    with torch.no_grad():
        y3 = selective_scan_chunked(**args)
        y4 = selective_scan_chunked(**{**args, "B": args["B"][:, None], "C": args["C"][:, None]})
    assert torch.equal(y3, y4)
    two = {**args, "B": args["B"][:, None].expand(-1, 2, -1, -1),
           "C": args["C"][:, None].expand(-1, 2, -1, -1)}
    with pytest.raises(ValueError, match="one B/C group"):
        selective_scan_chunked(**two)


def test_bad_chunk_is_a_clear_error():
    with pytest.raises(ValueError, match="scan_chunk"):
        selective_scan_chunked(**_inputs(8), chunk=0)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_chunked_on_cuda_matches_the_sequential_oracle(dtype, tol):
    """The torch scan a GPU without mamba_ssm runs, against the exact recurrence on CPU (fp32:
    the GPU's different summation order and TF32-free matmuls keep it near 1e-5)."""
    args = _inputs(300, dtype=dtype)
    grad_out = torch.randn(BATCH, DIM, 300, generator=torch.Generator().manual_seed(1)).to(dtype)
    y_ref, g_ref = _grads(selective_scan_ref, args, grad_out)
    cuda_args = {k: (v.detach().cuda().requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    y, g = _grads(selective_scan_chunked, cuda_args, grad_out.cuda(), chunk=16)
    assert y.is_cuda and y.dtype == dtype
    assert _rel_err(y.cpu(), y_ref) < tol
    for name, a, b in zip(args, g, g_ref):
        assert _rel_err(a.cpu(), b) < tol, name
