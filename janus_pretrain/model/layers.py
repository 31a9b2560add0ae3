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


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 (bf16 squares lose too much at large D)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); used as the dense FFN and as each MoE expert."""

    def __init__(self, d_model: int, hidden: int, std: float):
        super().__init__()
        self.gate_proj = init_linear(d_model, hidden, std)
        self.up_proj = init_linear(d_model, hidden, std)
        self.down_proj = init_linear(hidden, d_model, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class KernelSlot:
    """Holds the kernel backend chosen for a model; resolved once, on the device of the first input.

    Modules keep a reference to one shared slot (not a submodule, so no state_dict entries), which
    is why the fast and reference paths share parameters and state_dict keys.
    """

    def __init__(self, preference: str):
        self.preference = preference
        self._kernels = {}

    def get(self, device: torch.device):
        from janus_pretrain.model.kernels import select_kernels

        key = device.type
        if key not in self._kernels:
            self._kernels[key] = select_kernels(self.preference, device)
        return self._kernels[key]
