"""Kernel dispatch: the only module that imports the CUDA kernel packages.

PLACEHOLDER (replaced by the kernels work): plain reference ops so the model can be built.
Layouts follow the CUDA packages exactly:
  selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus): u/delta/z (B, Di, L),
      A (Di, N), B/C (B, N, L), D/delta_bias (Di,) -> (B, Di, L)       [mamba_ssm selective_scan_fn]
  causal_conv1d(x, weight, bias, activation): x (B, Di, L), weight (Di, W) -> (B, Di, L)
                                                                      [causal_conv1d_fn]
  causal_attention(q, k, v): (B, L, H, Dh) -> (B, L, H, Dh)            [flash_attn_func causal=True]
  fusion_attention(q, k, v, seq_len): (B, H, 2L, Dh) -> (B, H, 2L, Dh) with the Janus mask
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class Kernels:
    name = "reference"

    def selective_scan(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        dtype = u.dtype
        u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
        if delta_bias is not None:
            delta = delta + delta_bias.float()[None, :, None]
        if delta_softplus:
            delta = F.softplus(delta)
        dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
        dBu = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
        h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
        ys = []
        for i in range(u.shape[2]):
            h = dA[:, :, i] * h + dBu[:, :, i]
            ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, i]))
        y = torch.stack(ys, dim=2)
        if D is not None:
            y = y + u * D.float()[None, :, None]
        if z is not None:
            y = y * F.silu(z.float())
        return y.to(dtype)

    def causal_conv1d(self, x, weight, bias=None, activation=None):
        width = weight.shape[1]
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[2]]
        return F.silu(out) if activation in ("silu", "swish") else out

    def causal_attention(self, q, k, v):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return out.transpose(1, 2)

    def fusion_attention(self, q, k, v, seq_len):
        n = 2 * seq_len
        idx = torch.arange(n, device=q.device)
        qi, ki = idx[:, None], idx[None, :]
        fwd_q, fwd_k = qi < seq_len, ki < seq_len
        allowed = ((fwd_q & fwd_k & (ki <= qi)) | (fwd_q & ~fwd_k & (ki - seq_len >= qi + 2))
                   | (~fwd_q & fwd_k & (ki <= qi - seq_len - 2)) | (~fwd_q & ~fwd_k & (ki >= qi)))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


def select_kernels(preference: str = "auto", device: torch.device | str = "cpu") -> Kernels:
    return Kernels()
