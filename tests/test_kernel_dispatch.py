"""Kernel dispatch: the CUDA glue driven on CPU through shims of the kernel packages, the choice
and its errors, the env switch, the log line; and (GPU only) real kernels vs the reference.

The shims have the packages' exact signatures (mamba_ssm 2.x selective_scan_fn, causal-conv1d
1.x causal_conv1d_fn, flash-attn 2.x flash_attn_func), compute with the reference ops, and raise
on the layout / dtype preconditions the real kernels enforce, so a transpose or cast missing in
the glue fails here instead of on the first GPU run.
"""
import logging

import pytest
import torch

from janus_pretrain.model import kernels as kmod
from janus_pretrain.model.kernels import Kernels, KernelsUnavailableError, select_kernels
from janus_pretrain.model.piece_kernels import (CpuFlashPieces, FlashAttnPieces, MathPieces,
                                                TorchCudaFlashPieces)
from kernel_shims import (REF, _flash_attn_backward, _flash_attn_forward, causal_conv1d_fn, flash_attn_func,
                          selective_scan_fn, shim_cuda_kernels)

def _grad_check(fn_a, fn_b, inputs, rtol, atol):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out_a = fn_a(*leaves)
    g = torch.randn(out_a.shape, generator=torch.Generator().manual_seed(9)).to(out_a.dtype)
    grads_a = torch.autograd.grad(out_a, leaves, g)
    leaves_b = [t.detach().clone().requires_grad_() for t in inputs]
    out_b = fn_b(*leaves_b)
    grads_b = torch.autograd.grad(out_b, leaves_b, g)
    assert out_a.dtype == out_b.dtype
    torch.testing.assert_close(out_a, out_b, rtol=rtol, atol=atol)
    for a, b in zip(grads_a, grads_b):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scan_glue_matches_reference(dtype):
    g = torch.Generator().manual_seed(0)
    b, d, n, L = 2, 6, 4, 21
    # the model hands B/C in fp32 and D/delta_bias as parameters; the glue must fix dtypes
    u, delta, z = (torch.randn(b, d, L, generator=g).to(dtype) for _ in range(3))
    A = -torch.rand(d, n, generator=g) - 0.1
    B, C = torch.randn(b, n, L, generator=g), torch.randn(b, L, n, generator=g).transpose(1, 2)
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g).to(dtype)
    cuda, tol = shim_cuda_kernels(), (1e-5 if dtype == torch.float32 else 2e-2)

    def call(k):
        return lambda *t: k.selective_scan(*t, delta_softplus=True)
    _grad_check(call(cuda), call(REF), (u, delta, A, B, C, D, z, bias), tol, tol)


def test_conv_glue_matches_reference():
    g = torch.Generator().manual_seed(0)
    # channel-last x (a transposed view), as an in-projection produces it
    x = torch.randn(2, 17, 6, generator=g).transpose(1, 2)
    w, bias = torch.randn(6, 4, generator=g), torch.randn(6, generator=g)
    cuda = shim_cuda_kernels()
    for act in (None, "silu"):
        _grad_check(lambda *t: cuda.causal_conv1d(*t, activation=act),
                    lambda *t: REF.causal_conv1d(*t, activation=act), (x, w, bias), 1e-6, 1e-6)


def test_conv_reference_is_causal():
    x = torch.randn(1, 3, 12)
    w = torch.randn(3, 4)
    y0 = REF.causal_conv1d(x, w)
    x[:, :, 7] += 1.0
    y1 = REF.causal_conv1d(x, w)
    assert torch.equal(y0[:, :, :7], y1[:, :, :7]) and not torch.equal(y0[:, :, 7], y1[:, :, 7])


def test_attention_glue_matches_reference():
    g = torch.Generator().manual_seed(0)
    # fp32 (B, L, H, Dh) from a strided split of a fused qkv projection
    qkv = torch.randn(2, 19, 3 * 4 * 8, generator=g)
    q, k, v = (t.reshape(2, 19, 4, 8) for t in qkv.split(32, dim=-1))
    cuda = shim_cuda_kernels()
    # the glue goes through bf16 (flash-attn has no fp32 kernel): bf16 tolerance
    _grad_check(cuda.causal_attention, REF.causal_attention, (q, k, v), 3e-2, 3e-2)


def test_fusion_glue_matches_reference():
    g = torch.Generator().manual_seed(0)
    # bf16 runs the flash-attn pieces (through shims), fp32 the math pieces, as on a GPU
    qkv = [torch.randn(2, 3, 14, 8, generator=g) for _ in range(3)]
    cuda = shim_cuda_kernels()
    _grad_check(lambda *t: cuda.fusion_attention(*t, 7), lambda *t: REF.fusion_attention(*t, 7), qkv, 1e-5, 1e-5)
    bf16 = [t.bfloat16() for t in qkv]
    _grad_check(lambda *t: cuda.fusion_attention(*t, 7).float(),
                lambda *t: REF.fusion_attention(*(x.float() for x in t), 7), bf16, 3e-2, 3e-2)


def test_shims_enforce_kernel_preconditions():
    # the shims must be able to fail, or the glue tests above prove nothing
    q = torch.randn(1, 5, 2, 8)
    with pytest.raises(AssertionError, match="fp16/bf16"):
        flash_attn_func(q, q, q, causal=True)
    x = torch.randn(1, 4, 9)
    with pytest.raises(AssertionError, match="width"):
        causal_conv1d_fn(x, torch.randn(4, 5))
    u = torch.randn(1, 4, 9)
    with pytest.raises(AssertionError):
        selective_scan_fn(u, u, torch.randn(4, 3).double(), torch.randn(1, 3, 9),
                          torch.randn(1, 3, 9))


_NOT_IMPORTABLE = {p: f"{p} not importable: ModuleNotFoundError: No module named '{p}'"
                   for p in ("mamba_ssm", "causal_conv1d", "flash_attn")}
_PACKAGES = {"mamba_ssm": {"selective_scan_fn": selective_scan_fn},
             "causal_conv1d": {"causal_conv1d_fn": causal_conv1d_fn},
             "flash_attn": {"flash_attn_func": flash_attn_func, "_flash_attn_forward": _flash_attn_forward,
                            "_flash_attn_backward": _flash_attn_backward}}


def _only(*packages):
    """_import_cuda_kernels as on a machine where exactly these packages import."""
    found = {p: _PACKAGES[p] for p in packages}
    return lambda: (found, {p: why for p, why in _NOT_IMPORTABLE.items() if p not in found})


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.delenv(kmod.ENV_SWITCH, raising=False)
    monkeypatch.setattr(kmod, "_logged", set())
    # no CUDA packages, whatever this machine has installed
    monkeypatch.setattr(kmod, "_import_cuda_kernels", _only())


def test_auto_on_cpu_is_torch_ops_with_the_pieces_fusion(fresh):
    k = select_kernels("auto", "cpu")
    assert type(k) is Kernels and k.name == "torch" and k.fusion == "pieces"
    assert isinstance(k.pieces[0], CpuFlashPieces)
    assert all("device is cpu" in k.choices[op] for op in ("selective_scan", "causal_conv1d", "causal_attention"))


def test_reference_preference_is_the_oracle_everywhere_unless_fusion_is_named(fresh):
    k = select_kernels("reference", "cpu")
    assert k.name == "reference" and k.fusion == "reference"
    assert select_kernels("reference", "cpu", fusion="pieces").fusion == "pieces"
    assert select_kernels("auto", "cpu", fusion="reference").fusion == "reference"
    assert select_kernels("auto", "cpu", fusion="flex").fusion == "flex"
    with pytest.raises(ValueError, match="fusion_kernel must be one of auto, pieces, flex, reference"):
        select_kernels("auto", "cpu", fusion="ring")


def test_auto_on_cuda_without_packages_keeps_fast_fusion_and_says_why(fresh):
    k = select_kernels("auto", "cuda")
    assert k.name == "torch" and k.fusion == "pieces"
    assert isinstance(k.pieces[0], TorchCudaFlashPieces) and isinstance(k.pieces[-1], MathPieces)
    assert "torch chunked scan (mamba_ssm not importable" in k.choices["selective_scan"]
    assert "torch SDPA (flash_attn not importable" in k.choices["causal_attention"]
    assert "SDPA" in k.choices["fusion_attention"] and "flash_attn not importable" in k.choices["fusion_attention"]


def test_choice_is_per_op_when_only_some_packages_import(fresh, monkeypatch):
    # the GPU image after building causal-conv1d and mamba-ssm, without flash-attn
    monkeypatch.setattr(kmod, "_import_cuda_kernels", _only("mamba_ssm", "causal_conv1d"))
    for preference in ("auto", "cuda"):  # 'cuda' does not need flash_attn: torch has the flash kernel
        k = select_kernels(preference, "cuda")
        assert k.selective_scan_fn is selective_scan_fn and k.causal_conv1d_fn is causal_conv1d_fn
        assert k.flash_attn_func is None and isinstance(k.pieces[0], TorchCudaFlashPieces)
        assert k.name == "cuda"
    monkeypatch.setattr(kmod, "_import_cuda_kernels", _only("flash_attn"))
    k = select_kernels("auto", "cuda")
    assert k.selective_scan_fn is None and k.flash_attn_func is flash_attn_func
    assert isinstance(k.pieces[0], FlashAttnPieces) and k.pieces[0].forward_fn is _flash_attn_forward


def test_old_flash_attn_is_refused_with_the_reason(monkeypatch):
    import sys
    import types
    package, interface = types.ModuleType("flash_attn"), types.ModuleType("flash_attn.flash_attn_interface")
    package.__version__ = "2.6.3"
    for name, fn in _PACKAGES["flash_attn"].items():
        setattr(interface, name, fn)
    monkeypatch.setitem(sys.modules, "flash_attn", package)
    monkeypatch.setitem(sys.modules, "flash_attn.flash_attn_interface", interface)
    kmod._import_cuda_kernels.cache_clear()
    try:
        found, missing = kmod._import_cuda_kernels()
        assert "flash_attn" not in found and "2.6.3 is older than 2.7" in missing["flash_attn"]
        package.__version__ = "2.8.3.post1"
        kmod._import_cuda_kernels.cache_clear()
        found, _ = kmod._import_cuda_kernels()
        assert found["flash_attn"]["_flash_attn_backward"] is _flash_attn_backward
    finally:
        kmod._import_cuda_kernels.cache_clear()


def test_forcing_cuda_here_is_a_clear_error(fresh):
    with pytest.raises(KernelsUnavailableError, match="device is cpu"):
        select_kernels("cuda", "cpu")
    with pytest.raises(KernelsUnavailableError, match=r"mamba_ssm.*pip install \.\[gpu\]"):
        select_kernels("cuda", "cuda")


def test_forcing_cuda_with_packages_gives_cuda_kernels(fresh, monkeypatch):
    monkeypatch.setattr(kmod, "_import_cuda_kernels", _only("mamba_ssm", "causal_conv1d", "flash_attn"))
    k = select_kernels("cuda", "cuda", scan_chunk=8)
    assert k.name == "cuda" and k.fusion == "pieces" and isinstance(k.pieces[0], FlashAttnPieces)
    assert k.selective_scan_fn is selective_scan_fn and k.scan_chunk == 8


def test_env_switch_overrides_preference(fresh, monkeypatch):
    monkeypatch.setenv(kmod.ENV_SWITCH, "reference")
    k = select_kernels("cuda", "cuda", fusion="pieces")  # the switch forces the fusion oracle too
    assert k.name == "reference" and k.fusion == "reference"
    assert all(kmod.ENV_SWITCH in why for why in k.choices.values())
    monkeypatch.setenv(kmod.ENV_SWITCH, "cuda")
    with pytest.raises(KernelsUnavailableError, match=kmod.ENV_SWITCH):
        select_kernels("reference", "cpu")
    monkeypatch.setenv(kmod.ENV_SWITCH, "fast")
    with pytest.raises(ValueError, match="auto, cuda, reference"):
        select_kernels()


def test_choice_logged_once_per_op_with_reason(fresh, caplog):
    with caplog.at_level(logging.INFO, logger="janus_pretrain"):
        for _ in range(2):
            select_kernels("auto", "cuda")
    records = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kernels on")]
    assert len(records) == 1
    lines = records[0].splitlines()
    assert lines[0] == "kernels on cuda (torch):"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "selective_scan", "causal_conv1d", "causal_attention", "fusion_attention"]
    assert "mamba_ssm not importable" in lines[1] and "causal pieces" in lines[4]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and pip install .[gpu]")
def test_real_kernels_match_reference():
    for package in ("mamba_ssm", "causal_conv1d"):  # flash_attn is optional: torch has the flash kernel
        pytest.importorskip(package)
    fast = select_kernels("cuda", "cuda")
    ref = Kernels()
    g = torch.Generator(device="cuda").manual_seed(0)
    b, d, n, L = 2, 64, 16, 1000

    def r(*shape):
        return torch.randn(*shape, device="cuda", generator=g)
    u, delta, z, B, C = r(b, d, L), r(b, d, L) * 0.1, r(b, d, L), r(b, n, L), r(b, n, L)
    A, D, bias = -torch.rand(d, n, device="cuda") - 0.1, r(d), r(d)
    _grad_check(lambda *t: fast.selective_scan(*t, delta_softplus=True),
                lambda *t: ref.selective_scan(*t, delta_softplus=True),
                (u, delta, A, B, C, D, z, bias), 1e-3, 1e-3)
    _grad_check(lambda *t: fast.causal_conv1d(*t, activation="silu"),
                lambda *t: ref.causal_conv1d(*t, activation="silu"),
                (r(b, d, L), r(d, 4), r(d)), 1e-4, 1e-4)
    qkv = [r(b, L, 4, 32).bfloat16() for _ in range(3)]
    _grad_check(fast.causal_attention, ref.causal_attention, qkv, 2e-2, 2e-2)
    qkv = [r(b, 4, 2 * 300, 32) for _ in range(3)]
    _grad_check(lambda q, k, v: fast.fusion_attention(q, k, v, 300),
                lambda q, k, v: ref.fusion_attention(q, k, v, 300), qkv, 2e-3, 2e-3)
