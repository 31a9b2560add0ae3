"""Mamba-1 mixer as in the JanusDNA reference (Jamba-style RMS norms on dt, B and C).

The selective scan and the causal conv go through the kernel slot, so the CUDA kernels and the
CPU reference share every parameter. In/out projections can be owned by the caller and shared
between the forward and backward streams (tie_mamba_projections).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from janus_pretrain.model_config import ModelConfig
from janus_pretrain.model.context_parallel import StreamSlices, conv_across_slices, scan_carry_correction
from janus_pretrain.model.kernels import KernelSlot
from janus_pretrain.model.layers import RMSNorm, init_linear


def mamba_projections(config: ModelConfig) -> tuple[nn.Linear, nn.Linear]:
    """The (in_proj, out_proj) pair; built separately so two streams can share one pair."""
    std = config.initializer_range
    return (init_linear(config.d_model, 2 * config.d_inner, std),
            init_linear(config.d_inner, config.d_model, std))


class MambaMixer(nn.Module):
    def __init__(self, config: ModelConfig, kernels: KernelSlot,
                 shared_projections: tuple[nn.Linear, nn.Linear] | None = None, stream: StreamSlices | None = None):
        super().__init__()
        self.stream = stream  # context parallel: this stream's slices (model/context_parallel.py)
        d_inner, d_state, dt_rank = config.d_inner, config.d_state, config.dt_rank_value
        self.kernels = kernels
        self.scan_chunk = config.scan_chunk
        if shared_projections is None:
            self.in_proj, self.out_proj = mamba_projections(config)
            self._shared = None
        else:  # kept outside the module tree: the owner registers them once
            self._shared = shared_projections
        self.conv1d = nn.Conv1d(d_inner, d_inner, config.d_conv, groups=d_inner, padding=config.d_conv - 1)
        self.x_proj = init_linear(d_inner, dt_rank + 2 * d_state, config.initializer_range)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.dt_norm = RMSNorm(dt_rank, config.norm_eps)
        self.b_norm = RMSNorm(d_state, config.norm_eps)
        self.c_norm = RMSNorm(d_state, config.norm_eps)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self._init_dt(config)

    def _init_dt(self, config: ModelConfig) -> None:
        # dt_proj.bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max] (Mamba's init)
        std = config.dt_rank_value ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(config.d_inner) * (math.log(config.dt_max) - math.log(config.dt_min))
                       + math.log(config.dt_min)).clamp(min=config.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def projections(self) -> tuple[nn.Linear, nn.Linear]:
        return self._shared if self._shared is not None else (self.in_proj, self.out_proj)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        in_proj, out_proj = self.projections()
        kernels = self.kernels.get(hidden.device)
        # (B, 2Di, L) contiguous along L, as mamba_ssm lays it out: the conv output and z then
        # reach the scan kernel without the contiguous copies a (B, L, 2Di) transpose would cost
        xz = torch.matmul(in_proj.weight, hidden.transpose(1, 2))  # (B, 2Di, L)
        if in_proj.bias is not None:
            xz = xz + in_proj.bias[:, None]
        x, z = xz.chunk(2, dim=1)  # (B, Di, L) each
        if self.stream is None:
            x = kernels.causal_conv1d(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        else:
            x = conv_across_slices(kernels.causal_conv1d, x, self.conv1d.weight.squeeze(1), self.conv1d.bias,
                                   "silu", self.stream)
        dt_rank, d_state = self.dt_norm.weight.shape[0], self.b_norm.weight.shape[0]
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([dt_rank, d_state, d_state], dim=-1)  # (B, L, .)
        dt = self.dt_proj.weight @ self.dt_norm(dt).transpose(1, 2)  # (B, Di, L); bias goes to the scan
        B = self.b_norm(B).transpose(1, 2).contiguous()  # (B, N, L)
        C = self.c_norm(C).transpose(1, 2).contiguous()  # (B, N, L)
        A = -torch.exp(self.A_log.float())  # (Di, N)
        y = kernels.selective_scan(x, dt, A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                                   delta_softplus=True, chunk=self.scan_chunk)  # (B, Di, L)
        if self.stream is not None:  # the states carried in from the previous slices
            y = y + scan_carry_correction(x, dt, A, B, C, z, self.dt_proj.bias, self.stream)
        return out_proj(y.transpose(1, 2))  # (B, L, D)
