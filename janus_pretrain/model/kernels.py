"""Kernel dispatch: the only module that imports the CUDA kernel packages (docs/architecture.md, kernel).

The model calls only the object returned by select_kernels(), which picks one implementation per
op, each logged with its reason. Layouts follow the CUDA packages:
  selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk=None):
      u/delta/z (B, Di, L), A (Di, N) real, B/C (B, N, L), D/delta_bias (Di,) fp32
      -> (B, Di, L) in u's dtype                   [mamba_ssm selective_scan_fn | torch chunked scan]
  causal_conv1d(x, weight, bias, activation): x (B, Di, L), weight (Di, W) -> (B, Di, L)
                                                    [causal_conv1d_fn | torch conv1d]
  causal_attention(q, k, v): (B, L, H, Dh) -> (B, L, H, Dh)  [flash_attn_func | torch SDPA]
  fusion_attention(q, k, v, seq_len, query_block=None, scale=None): (B, H, 2L, Dh) -> (B, H, 2L, Dh), Janus mask
      [causal pieces merged by log-sum-exp (model/fusion_pieces.py) on the device's flash kernel |
       FlexAttention | the exact query-blocked reference]
Every implementation takes no parameters of its own, so state_dicts are identical on every path.
The CUDA glue lives in cuda_* functions and piece classes that take the kernel callables as
arguments, so tests drive it on CPU with shims of the packages' exact signatures.
"""
from __future__ import annotations

import functools
import importlib
import logging
import os

import torch
import torch.nn.functional as F

from janus_pretrain.model.fusion_attention import fusion_attention_flex, fusion_attention_reference
from janus_pretrain.model.fusion_pieces import fusion_attention_pieces
from janus_pretrain.model.piece_kernels import (CpuFlashPieces, FlashAttnPieces, MathPieces, TorchCudaFlashPieces,
                                                pick_pieces)
from janus_pretrain.model.scan import selective_scan_chunked

log = logging.getLogger("janus_pretrain")

ENV_SWITCH = "JANUS_KERNELS"
# The kernel vocabulary, here only. What a config asks for (model.kernels, $JANUS_KERNELS):
PREFERENCES = ("auto", "cuda", "reference")
FUSION_KERNELS = ("auto", "pieces", "flex", "reference")  # model.fusion_kernel
# What a device ends up running: Kernels.name (which ops: reference | torch | cuda) with the fusion
# kernel and the device type make one kernel set, the unit the memory model (memory.py),
# `janus memory --backend` and the benchmarks speak of (kernel_set()).
KERNEL_SETS = {
    "cuda": "mamba_ssm, causal_conv1d, flash attention and the causal-pieces fusion (the GPU default)",
    "cuda-flex": "the same with model.fusion_kernel=flex",
    "torch-cuda": "a GPU without kernel packages: torch's scan and conv1d, SDPA, fusion pieces on torch's "
                  "CUDA flash kernel",
    "reference": "the CPU kernels in fp32 (CPU-validated)",
}
# package -> (module, attributes): the fast kernels, imported together or not at all
_CUDA_KERNELS = {
    "mamba_ssm": ("mamba_ssm.ops.selective_scan_interface", ("selective_scan_fn",)),
    "causal_conv1d": ("causal_conv1d", ("causal_conv1d_fn",)),
    "flash_attn": ("flash_attn.flash_attn_interface",
                   ("flash_attn_func", "_flash_attn_forward", "_flash_attn_backward")),
}
# 'cuda' must have these: torch has no fused equivalent (attention falls back to torch's own flash kernel)
_REQUIRED_FOR_CUDA = ("mamba_ssm", "causal_conv1d")
FLASH_ATTN_MIN = (2, 7)  # _flash_attn_forward / _flash_attn_backward took their current signature in 2.7
_logged: set[str] = set()


class KernelsUnavailableError(RuntimeError):
    """'cuda' kernels were forced where they cannot run."""


class Kernels:
    """One implementation per op: the CUDA package kernel where one is given, else torch's.

    Kernels() alone is the all-reference set, the oracle of every other path. select_kernels()
    builds the set for a device; `choices` says, per op, what runs and why.
    """

    def __init__(self, selective_scan_fn=None, causal_conv1d_fn=None, flash_attn_func=None,
                 fusion: str = "reference", pieces=(), scan_chunk: int = 64, fusion_query_block: int = 1024,
                 choices: dict[str, str] | None = None):
        if fusion not in FUSION_KERNELS[1:]:
            raise ValueError(f"kernels: fusion must be one of {', '.join(FUSION_KERNELS[1:])}, got {fusion!r}")
        if fusion == "pieces" and not pieces:
            raise ValueError("kernels: fusion 'pieces' needs at least one piece backend")
        # plain attributes so tests can swap in shims
        self.selective_scan_fn = selective_scan_fn
        self.causal_conv1d_fn = causal_conv1d_fn
        self.flash_attn_func = flash_attn_func
        self.fusion, self.pieces = fusion, tuple(pieces)
        self.scan_chunk = scan_chunk
        self.fusion_query_block = fusion_query_block
        self.choices = choices or {}

    @property
    def name(self) -> str:
        """'reference' (every op the torch oracle), 'cuda' (the Mamba package kernels) or 'torch'
        (torch ops with a fast fusion path, e.g. CPU training or a GPU without kernel packages)."""
        if self.selective_scan_fn is not None:
            return "cuda"
        plain = self.causal_conv1d_fn is None and self.flash_attn_func is None and self.fusion == "reference"
        return "reference" if plain else "torch"

    def selective_scan(self, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, chunk: int | None = None):
        if self.selective_scan_fn is not None:
            return cuda_selective_scan(self.selective_scan_fn, u, delta, A, B, C, D, z, delta_bias,
                                       delta_softplus)
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                      chunk=chunk or self.scan_chunk)

    def causal_conv1d(self, x, weight, bias=None, activation=None):
        if self.causal_conv1d_fn is not None:
            return cuda_causal_conv1d(self.causal_conv1d_fn, x, weight, bias, activation)
        _check_activation(activation)
        width = weight.shape[1]
        # left-pad by W-1 and keep the first L outputs: output t sees inputs t-W+1..t
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])
        out = out[..., : x.shape[2]]
        return F.silu(out) if activation in ("silu", "swish") else out

    def causal_attention(self, q, k, v):
        if self.flash_attn_func is not None:
            return cuda_causal_attention(self.flash_attn_func, q, k, v)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True)
        return out.transpose(1, 2)  # (B, L, H, Dh)

    def fusion_attention(self, q, k, v, seq_len: int, query_block: int | None = None, scale: float | None = None):
        """scale: of the softmax scores, None = 1/sqrt(Dh) (model.fusion_scale_dim sets another)."""
        if self.fusion == "pieces":
            return fusion_attention_pieces(q, k, v, seq_len, pick_pieces(self.pieces, q.dtype), scale)
        if self.fusion == "flex":  # tiles by itself: query_block only concerns the reference
            return fusion_attention_flex(q, k, v, seq_len, scale)
        return fusion_attention_reference(q, k, v, seq_len,
                                          query_block=query_block or self.fusion_query_block, scale=scale)

    def describe(self) -> str:
        return "\n".join(f"  {op}: {what}" for op, what in self.choices.items())

    def kernel_set(self, device_type: str) -> str:
        return kernel_set(self.name, self.fusion, device_type)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, fusion={self.fusion!r})"


def kernel_set(kernels_name: str, fusion: str, device_type: str) -> str:
    """The KERNEL_SETS name of a kernel set (Kernels.name, Kernels.fusion) on a device type."""
    if device_type != "cuda":
        return "reference"
    if kernels_name == "cuda":
        return "cuda-flex" if fusion == "flex" else "cuda"
    return "torch-cuda"


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


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@functools.lru_cache(maxsize=1)
def _import_cuda_kernels() -> tuple[dict, dict]:
    """({package: {attribute: callable}}, {package: why not}); imported once per process."""
    found, missing = {}, {}
    for package, (module, attrs) in _CUDA_KERNELS.items():
        try:
            mod = importlib.import_module(module)
            found[package] = {attr: getattr(mod, attr) for attr in attrs}
        except Exception as exc:  # ImportError, or the package's missing CUDA extension
            missing[package] = f"{package} not importable: {type(exc).__name__}: {exc}"
    if "flash_attn" in found:
        version = getattr(importlib.import_module("flash_attn"), "__version__", "0")
        if _version_tuple(version) < FLASH_ATTN_MIN:
            del found["flash_attn"]
            missing["flash_attn"] = (f"flash_attn {version} is older than {'.'.join(map(str, FLASH_ATTN_MIN))} "
                                     "(its _flash_attn_forward has another signature): pip install 'flash-attn>=2.7'")
    return found, missing


def _cuda_pieces(found: dict) -> tuple[list, str]:
    """Piece backends on CUDA, best first, and their description."""
    if "flash_attn" in found:
        fa = found["flash_attn"]
        half = FlashAttnPieces(fa["_flash_attn_forward"], fa["_flash_attn_backward"])
    else:
        half = TorchCudaFlashPieces(torch.ops.aten._scaled_dot_product_flash_attention,
                                    torch.ops.aten._scaled_dot_product_flash_attention_backward)
    # the flash kernels have no fp32 path: other dtypes run the exact math pieces
    return [half, MathPieces()], f"{half.name} for fp16/bf16, math pieces for other dtypes"


def select_kernels(preference: str = "auto", device: torch.device | str = "cpu", scan_chunk: int = 64,
                   fusion_query_block: int = 1024, fusion: str = "auto") -> Kernels:
    """Pick one implementation per op and log the choice once, with its reasons.

    preference (model.kernels): 'auto' (each CUDA package kernel where the device is CUDA and the
    package imports), 'cuda' (mamba_ssm and causal_conv1d required: an error otherwise; the
    attention ops use flash_attn when it imports, else torch's own flash kernel) or 'reference'.
    fusion (model.fusion_kernel): 'auto' (the causal pieces, or the reference when preference is
    'reference'), 'pieces', 'flex' or 'reference'. $JANUS_KERNELS overrides the preference, and
    when it says 'reference' the fusion kernel too.
    """
    env = os.environ.get(ENV_SWITCH)
    source = "model.kernels"
    if env:
        preference, source = env.strip().lower(), f"${ENV_SWITCH}"
    if preference not in PREFERENCES:
        raise ValueError(f"kernels: {source} must be one of {', '.join(PREFERENCES)}, got {preference!r}")
    if fusion not in FUSION_KERNELS:
        raise ValueError(f"kernels: model.fusion_kernel must be one of {', '.join(FUSION_KERNELS)}, "
                         f"got {fusion!r}")
    device = torch.device(device)
    found, missing = {}, {}
    if preference == "reference":
        no_package = f"reference requested by {source}"
    elif device.type != "cuda":
        if preference == "cuda":
            raise KernelsUnavailableError(
                f"kernels: 'cuda' requested by {source} but the device is {device}; the CUDA "
                "kernels need a CUDA GPU. Use kernels: reference (or auto) on CPU.")
        no_package = f"device is {device}"
    else:
        found, missing = _import_cuda_kernels()
        absent = [missing[p] for p in _REQUIRED_FOR_CUDA if p in missing]
        if preference == "cuda" and absent:
            raise KernelsUnavailableError(
                f"kernels: 'cuda' requested by {source} but {'; '.join(absent)}. Install the kernel "
                "packages with `pip install .[gpu]` (on a machine with CUDA), or set kernels: auto.")
        no_package = ""

    def pick(package: str, attr: str, fast: str, slow: str) -> tuple[object, str]:
        if package in found:
            return found[package][attr], f"{fast} ({package} imports)"
        return None, f"{slow} ({no_package or missing.get(package, f'{package} not found')})"

    scan_fn, scan_why = pick("mamba_ssm", "selective_scan_fn", "mamba_ssm selective_scan_fn",
                             "torch chunked scan")
    conv_fn, conv_why = pick("causal_conv1d", "causal_conv1d_fn", "causal_conv1d_fn", "torch conv1d")
    attn_fn, attn_why = pick("flash_attn", "flash_attn_func", "flash_attn_func", "torch SDPA")

    fusion_source = "model.fusion_kernel"
    if env and preference == "reference":
        fusion, fusion_source = "reference", source
    elif fusion == "auto":
        fusion = "reference" if preference == "reference" else "pieces"
        fusion_source = f"model.fusion_kernel auto, {source} {preference}"
    pieces = ()
    fusion_why = {"reference": "exact query-blocked reference", "flex": "FlexAttention, Janus block mask"}.get(fusion)
    if fusion == "pieces":
        if device.type == "cuda":
            pieces, fusion_why = _cuda_pieces(found)
        else:
            pieces, fusion_why = [CpuFlashPieces(), MathPieces()], CpuFlashPieces.name
        fusion_why = f"causal pieces merged by log-sum-exp on {fusion_why}"
        if device.type == "cuda" and "flash_attn" not in found:
            fusion_why += f"; {no_package or missing.get('flash_attn', 'flash_attn not found')}"
    choices = {"selective_scan": scan_why, "causal_conv1d": conv_why, "causal_attention": attn_why,
               "fusion_attention": f"{fusion_why} ({fusion_source})"}
    kernels = Kernels(scan_fn, conv_fn, attn_fn, fusion=fusion, pieces=pieces, scan_chunk=scan_chunk,
                      fusion_query_block=fusion_query_block, choices=choices)
    text = f"kernels on {device.type} ({kernels.name}):\n{kernels.describe()}"
    if text not in _logged:
        _logged.add(text)
        log.info("%s", text)
    return kernels


class KernelSlot:
    """Holds the kernel backend chosen for a model; resolved once, on the device of the first input.

    Modules keep a reference to one shared slot (not a submodule, so no state_dict entries), which
    is why the fast and reference paths share parameters and state_dict keys. The chunk sizes are
    the model config's, so the chosen kernel set's defaults are the ones the model runs with.
    """

    def __init__(self, preference: str, scan_chunk: int = 64, fusion_query_block: int = 1024,
                 fusion: str = "auto"):
        self.preference, self.fusion = preference, fusion
        self.scan_chunk, self.fusion_query_block = scan_chunk, fusion_query_block
        self._kernels = {}

    def get(self, device: torch.device) -> Kernels:
        key = device.type
        if key not in self._kernels:
            self._kernels[key] = select_kernels(self.preference, device, self.scan_chunk,
                                                self.fusion_query_block, self.fusion)
        return self._kernels[key]
