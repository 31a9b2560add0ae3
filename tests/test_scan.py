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


@pytest.mark.parametrize("block,chunk", [(None, 16), (16, 4)], ids=["within-chunks", "across-blocks"])
def test_large_decay_is_finite_and_exact(monkeypatch, block, chunk):
    # delta * A down to about -100 per step: the within-chunk decay underflows to 0, never inf; across
    # time blocks (block 16) the carried state decays to 0, never exp of a positive sum
    if block is not None:
        monkeypatch.setattr(scan, "SCAN_BLOCK_STEPS", block)
    args = _inputs(70, delta_scale=1.0, options=False)
    with torch.no_grad():
        args["delta"].mul_(0).add_(torch.linspace(1.0, 83.0, 70))
        args["A"].clamp_(max=-1.2)
    assert (args["delta"][..., None] * args["A"][:, None]).min() < -99
    grad_out = torch.randn(BATCH, DIM, 70, generator=torch.Generator().manual_seed(1))
    y_ref, g_ref = _grads(selective_scan_ref, args, grad_out)
    y, g = _grads(selective_scan_chunked, args, grad_out, chunk=chunk)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in g)
    assert _rel_err(y, y_ref) < 1e-5
    for name, a, b in zip(args, g, g_ref):
        assert _rel_err(a, b) < 1e-5, name


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("length,block,chunk", [(50, 8, 8), (100, 16, 4), (37, 5, 4), (64, 64, 16)])
def test_time_blocks_match_the_sequential_oracle(monkeypatch, length, block, chunk, dtype, tol):
    # several blocks of all channels, one state carried between them forward and dL/dh backward;
    # (37, 5, 4): blocks rounded to whole chunks (8 steps) with a short last block
    monkeypatch.setattr(scan, "SCAN_BLOCK_STEPS", block)
    blocks = scan._blocks(length, scan._chunk_len(length, chunk))
    assert len(blocks) == -(-length // max(chunk, block // chunk * chunk)) and blocks[-1].stop == length
    args = _inputs(length, dtype=dtype)
    grad_out = torch.randn(BATCH, DIM, length, generator=torch.Generator().manual_seed(1)).to(dtype)
    y_ref, g_ref = _grads(selective_scan_ref, args, grad_out)
    y, g = _grads(selective_scan_chunked, args, grad_out, chunk=chunk)
    assert _rel_err(y, y_ref) < tol
    for name, a, b in zip(args, g, g_ref):
        assert _rel_err(a, b) < tol, name


def test_launches_do_not_grow_with_d_inner():
    # aten ops of one forward+backward on meta tensors (no compute): the count a GPU launches
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            return func(*args, **(kwargs or {}))

    def ops(dim, length):
        def meta(*shape):
            return torch.empty(*shape, device="meta", requires_grad=True)

        Count.ops = 0
        with Count():
            y = selective_scan_chunked(meta(1, dim, length), meta(1, dim, length), meta(dim, STATE),
                                       meta(1, STATE, length), meta(1, STATE, length), chunk=64)
            y.sum().backward()
        return Count.ops

    assert ops(8, 1 << 15) == ops(512, 1 << 15)
    assert ops(8, 1 << 16) > ops(8, 1 << 15)  # and they do grow with L / _BLOCK_STEPS


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
