"""The official JanusDNA initialisation (model.init: janusdna), for pretraining its recipes from scratch.

What the official code does (janusdna/modeling_janusdna.py, `_init_weights` applied by
transformers' post_init; docs/janusdna.md has the line references):
  - every Linear and depthwise Conv1d weight ~ N(0, initializer_range), every bias = 0: so the
    Mamba dt_proj bias is 0 (no inverse-softplus dt init) and the conv is N(0, 0.02);
  - the embedding ~ N(0, initializer_range);
  - the q, k and v projections of every attention (per-stream and fusion) ~ Xavier uniform;
  - RMSNorm weights 1, A_log = log(1..d_state), D = 1 (as built).
Our concatenated qkv_proj gets Xavier on each of its three (D, D) blocks, which is what three
separate official projections get.

Each tensor is drawn from its own generator, seeded from one draw of the global RNG and the
parameter's name: expert names carry global ids, so the values do not depend on ep_size (the
model builds every expert before dropping the non-local ones, so the global RNG is in the same
state whatever the expert-parallel layout).
"""
from __future__ import annotations

import zlib

import torch
from torch import nn


def _generator(base: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed((base * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 63))


def _normal(tensor: torch.Tensor, std: float, gen: torch.Generator) -> None:
    tensor.copy_(torch.randn(tensor.shape, generator=gen, dtype=torch.float32).mul_(std).to(tensor.dtype))


def _xavier_uniform(tensor: torch.Tensor, gen: torch.Generator) -> None:
    fan_out, fan_in = tensor.shape
    bound = (6.0 / (fan_in + fan_out)) ** 0.5
    tensor.copy_((torch.rand(tensor.shape, generator=gen, dtype=torch.float32) * 2 - 1).mul_(bound).to(tensor.dtype))


@torch.no_grad()
def janusdna_init_(model: nn.Module, std: float) -> None:
    """Re-draw every weight of `model` (a JanusForPretraining) the way the official code does."""
    if any(p.is_meta for p in model.parameters()):
        return  # shapes only (export checks build the model on the meta device)
    base = int(torch.randint(0, 2 ** 31 - 1, (), device="cpu").item())
    seen: set[int] = set()  # tied Mamba projections appear under two module paths
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
            for param_name, param in module.named_parameters(recurse=False):
                if id(param) in seen:
                    continue
                seen.add(id(param))
                name = f"{module_name}.{param_name}"
                gen = _generator(base, name)
                if param_name == "bias":
                    param.zero_()
                elif module_name.endswith("qkv_proj"):  # (3D, D): q, k, v blocks, each Xavier
                    for block in param.chunk(3, dim=0):
                        _xavier_uniform(block, gen)
                else:
                    _normal(param, std, gen)
