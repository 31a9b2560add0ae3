"""Kernel dispatch: the only module that imports the CUDA kernel packages (STYLE.md rule 4).

The model calls only the object returned by select_kernels(). Layouts follow the CUDA packages:
  selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk=None):
      u/delta/z (B, Di, L), A (Di, N) real, B/C (B, N, L), D/delta_bias (Di,) fp32
      -> (B, Di, L) in u's dtype                                  [mamba_ssm selective_scan_fn]
  causal_conv1d(x, weight, bias, activation): x (B, Di, L), weight (Di, W) -> (B, Di, L)
                                                                   [causal_conv1d_fn]
  causal_attention(q, k, v): (B, L, H, Dh) -> (B, L, H, Dh)         [flash_attn_func causal=True]
  fusion_attention(q, k, v, seq_len, query_block=None): (B, H, 2L, Dh) -> (B, H, 2L, Dh), Janus
      mask                                                          [FlexAttention on CUDA]
Reference and CUDA paths take no parameters of their own, so state_dicts are identical.
The CUDA glue lives in cuda_* functions that take the kernel callables as arguments, so tests can
drive it on CPU with shims of the packages' exact signatures.
"""
from __future__ import annotations

import functools
import importlib
import logging
import os

import torch
import torch.nn.functional as F

from janus_pretrain.model.fusion_attention import fusion_attention_flex, fusion_attention_reference
from janus_pretrain.model.scan import selective_scan_chunked

log = logging.getLogger("janus_pretrain")

ENV_SWITCH = "JANUS_KERNELS"
PREFERENCES = ("auto", "cuda", "reference")
# (package, module, attribute) of each fast kernel
_CUDA_KERNELS = {
    "mamba_ssm": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "causal_conv1d": ("causal_conv1d", "causal_conv1d_fn"),
    "flash_attn": ("flash_attn", "flash_attn_func"),
}
_logged: set[tuple[str, str]] = set()


class KernelsUnavailableError(RuntimeError):
    """'cuda' kernels were forced where they cannot run."""


class Kernels:
    """Pure-PyTorch kernels: run anywhere; the oracle for the CUDA path."""

    name = "reference"

    def __init__(self, scan_chunk: int = 64, fusion_query_block: int = 1024, reason: str = ""):
        self.scan_chunk = scan_chunk
        self.fusion_query_block = fusion_query_block
        self.reason = reason

    def selective_scan(self, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, chunk: int | None = None):
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                      chunk=chunk or self.scan_chunk)

    def causal_conv1d(self, x, weight, bias=None, activation=None):
        _check_activation(activation)
        width = weight.shape[1]
        # left-pad by W-1 and keep the first L outputs: output t sees inputs t-W+1..t
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])
        out = out[..., : x.shape[2]]
        return F.silu(out) if activation in ("silu", "swish") else out

    def causal_attention(self, q, k, v):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True)
        return out.transpose(1, 2)  # (B, L, H, Dh)

    def fusion_attention(self, q, k, v, seq_len: int, query_block: int | None = None):
        return fusion_attention_reference(q, k, v, seq_len,
                                          query_block=query_block or self.fusion_query_block)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, reason={self.reason!r})"


class CudaKernels(Kernels):
    """mamba_ssm / causal_conv1d / flash_attn / compiled FlexAttention; thin layout glue only."""

    name = "cuda"

    def __init__(self, selective_scan_fn, causal_conv1d_fn, flash_attn_func, flex=None, **kw):
        super().__init__(**kw)
        # plain attributes so tests can swap in shims
        self.selective_scan_fn = selective_scan_fn
        self.causal_conv1d_fn = causal_conv1d_fn
        self.flash_attn_func = flash_attn_func
        self.flex = flex or fusion_attention_flex

    def selective_scan(self, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, chunk: int | None = None):
        return cuda_selective_scan(self.selective_scan_fn, u, delta, A, B, C, D, z, delta_bias,
                                   delta_softplus)

    def causal_conv1d(self, x, weight, bias=None, activation=None):
        return cuda_causal_conv1d(self.causal_conv1d_fn, x, weight, bias, activation)

    def causal_attention(self, q, k, v):
        return cuda_causal_attention(self.flash_attn_func, q, k, v)

    def fusion_attention(self, q, k, v, seq_len: int, query_block: int | None = None):
        # FlexAttention tiles by itself; query_block only concerns the reference
        return self.flex(q, k, v, seq_len)


def _check_activation(activation):
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"causal_conv1d: activation must be None, 'silu' or 'swish', "
                         f"got {activation!r}")


def cuda_selective_scan(fn, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=False):
    """selective_scan_fn wants: u/delta/z/B/C one input dtype with unit last stride, A/D/delta_bias fp32."""
    dtype = u.dtype
    u = u.contiguous()
    delta, z = delta.to(dtype).contiguous(), None if z is None else z.to(dtype).contiguous()
    # variable B/C must carry the input dtype, not the weight dtype (kernel check)
    B, C = B.to(dtype).contiguous(), C.to(dtype).contiguous()
    A = A.float().contiguous()
    D = None if D is None else D.float().contiguous()
    delta_bias = None if delta_bias is None else delta_bias.float().contiguous()
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)  # (B, Di, L)


def cuda_causal_conv1d(fn, x, weight, bias=None, activation=None):
    """causal_conv1d_fn wants x (B, Di, L) with stride(2)==1 or channel-last, weight (Di, W)."""
    _check_activation(activation)
    if x.stride(2) != 1 and x.stride(1) != 1:
        x = x.contiguous()
    weight = weight.reshape(weight.shape[0], weight.shape[-1]).contiguous()  # (Di, W)
    bias = None if bias is None else bias.contiguous()
    return fn(x, weight, bias, activation=activation)


def cuda_causal_attention(fn, q, k, v):
    """flash_attn_func wants fp16/bf16 (B, L, H, Dh) with unit last stride; fp32 goes via bf16."""
    dtype = q.dtype
    # flash-attn has no fp32 kernel: cast fp32 inputs to bf16 and the result back
    work = dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    q, k, v = (t.to(work) for t in (q, k, v))
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=True)
    return out.to(dtype)


@functools.lru_cache(maxsize=1)
def _import_cuda_kernels() -> tuple[dict, dict]:
    """({package: callable}, {package: import error text}); imported once per process."""
    found, missing = {}, {}
    for package, (module, attr) in _CUDA_KERNELS.items():
        try:
            found[package] = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # ImportError, or the package's missing CUDA extension
            missing[package] = f"{type(exc).__name__}: {exc}"
    return found, missing


def select_kernels(preference: str = "auto", device: torch.device | str = "cpu",
                   scan_chunk: int = 64, fusion_query_block: int = 1024) -> Kernels:
    """Pick the kernel set: 'auto' (CUDA kernels when device is CUDA and all three packages
    import), 'cuda' (required: error otherwise) or 'reference'. $JANUS_KERNELS overrides."""
    env = os.environ.get(ENV_SWITCH)
    source = "model.kernels"
    if env:
        preference, source = env.strip().lower(), f"${ENV_SWITCH}"
    if preference not in PREFERENCES:
        raise ValueError(f"kernels: {source} must be one of {', '.join(PREFERENCES)}, "
                         f"got {preference!r}")
    device = torch.device(device)
    kw = dict(scan_chunk=scan_chunk, fusion_query_block=fusion_query_block)

    if preference == "reference":
        kernels = Kernels(reason=f"requested by {source}", **kw)
    elif device.type != "cuda":
        if preference == "cuda":
            raise KernelsUnavailableError(
                f"kernels: 'cuda' requested by {source} but the device is {device}; the CUDA "
                "kernels need a CUDA GPU. Use kernels: reference (or auto) on CPU.")
        kernels = Kernels(reason=f"device is {device}", **kw)
    else:
        found, missing = _import_cuda_kernels()
        if missing:
            detail = "; ".join(f"{p} not importable: {e}" for p, e in missing.items())
            if preference == "cuda":
                raise KernelsUnavailableError(
                    f"kernels: 'cuda' requested by {source} but {detail}. Install the kernel "
                    "packages with `pip install .[gpu]` (on a machine with CUDA), or set "
                    "kernels: reference.")
            kernels = Kernels(reason=detail, **kw)
        else:
            why = f"requested by {source}" if preference == "cuda" else "device is CUDA and " \
                "mamba_ssm, causal_conv1d, flash_attn import"
            kernels = CudaKernels(found["mamba_ssm"], found["causal_conv1d"],
                                  found["flash_attn"], reason=why, **kw)
    key = (kernels.name, kernels.reason)
    if key not in _logged:
        _logged.add(key)
        log.info("kernels: %s (%s)", kernels.name, kernels.reason)
    return kernels


class KernelSlot:
    """Holds the kernel backend chosen for a model; resolved once, on the device of the first input.

    Modules keep a reference to one shared slot (not a submodule, so no state_dict entries), which
    is why the fast and reference paths share parameters and state_dict keys. The chunk sizes are
    the model config's, so the chosen kernel set's defaults are the ones the model runs with.
    """

    def __init__(self, preference: str, scan_chunk: int = 64, fusion_query_block: int = 1024):
        self.preference = preference
        self.scan_chunk, self.fusion_query_block = scan_chunk, fusion_query_block
        self._kernels = {}

    def get(self, device: torch.device) -> Kernels:
        key = device.type
        if key not in self._kernels:
            self._kernels[key] = select_kernels(self.preference, device, self.scan_chunk,
                                                self.fusion_query_block)
        return self._kernels[key]
