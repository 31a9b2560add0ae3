"""Small building blocks shared by the Janus model: RMSNorm, SwiGLU, initialised linears."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def init_linear(in_features: int, out_features: int, std: float, bias: bool = False) -> nn.Linear:
    """nn.Linear with N(0, std) weights and zero bias (Jamba/GPT-style init)."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.normal_(layer.weight, mean=0.0, std=std)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs


class _RMSNormFunction(torch.autograd.Function):
    """y = x * rsqrt(mean(x^2) + eps) * w in fp32, saving only x (its own dtype) and rstd (B, L, 1).

    Autograd through the plain expression would keep x in fp32 and the normalised fp32 product:
    8 D bytes per row and norm beyond the input in bf16, 4 D in fp32 (docs/memory.md).
    """

    @staticmethod
    def forward(ctx, x, weight, eps):
        x32 = x.to(_compute_dtype(x))
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        ctx.save_for_backward(x, weight, rstd)
        return (x32 * rstd * weight.to(x32.dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        normed = x.to(rstd.dtype) * rstd  # (..., D)
        g = grad.to(rstd.dtype)
        grad_weight = (g * normed).reshape(-1, normed.shape[-1]).sum(0).to(weight.dtype)
        gn = g * weight.to(rstd.dtype)
        grad_x = rstd * (gn - normed * (gn * normed).mean(-1, keepdim=True))
        return grad_x.to(x.dtype), grad_weight, None


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 (bf16 squares lose too much at large D)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RMSNormFunction.apply(x, self.weight, self.eps)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); used as the dense FFN and as each MoE expert.

    recompute=True (set under activation checkpointing): backward keeps only the input rows and
    recomputes the four (rows, hidden) tensors, `chunk` rows at a time, so the FFN's own memory is
    bounded by the chunk instead of 4 x hidden values per row (the largest term of a layer).
    """

    def __init__(self, d_model: int, hidden: int, std: float, recompute: bool = False, chunk: int = 0):
        super().__init__()
        self.gate_proj = init_linear(d_model, hidden, std)
        self.up_proj = init_linear(d_model, hidden, std)
        self.down_proj = init_linear(hidden, d_model, std)
        self.recompute, self.chunk = recompute, chunk

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        if not (self.recompute and torch.is_grad_enabled()):
            return self._body(x)
        from torch.utils.checkpoint import checkpoint

        rows = x.reshape(-1, x.shape[-1])  # (T, D)
        step = self.chunk if self.chunk > 0 else max(rows.shape[0], 1)
        parts = [checkpoint(self._body, part, use_reentrant=False) for part in rows.split(step)]
        out = torch.cat(parts) if len(parts) != 1 else parts[0]
        return out.view(*x.shape[:-1], out.shape[-1])



class JanusDNAFinalMLP(nn.Sequential):
    """The official JanusDNA final MLP (code of 2025-08-01): Linear(D, 2D) SiLU Linear(2D, D) SiLU, with
    biases; indices 0 and 2 hold the Linears, so its state-dict names are those of the official
    `final_mlp` (mlp.0.weight, ...)."""

    def __init__(self, d_model: int, std: float):
        super().__init__(init_linear(d_model, 2 * d_model, std, bias=True), nn.SiLU(),
                         init_linear(2 * d_model, d_model, std, bias=True), nn.SiLU())


def final_mlp(config) -> nn.Module:
    """The MLP between the final norm and the LM head that model.final_mlp_kind names (residual:
    the head reads hidden + mlp(hidden))."""
    if config.final_mlp_kind == "janusdna":
        return JanusDNAFinalMLP(config.d_model, config.initializer_range)
    return SwiGLU(config.d_model, config.ffn_dim, config.initializer_range)
