"""Small model configs and backend switches shared by the model tests."""
from __future__ import annotations

import dataclasses

import torch

from janus_pretrain.config import ModelConfig
from janus_pretrain.model import JanusForPretraining
from janus_pretrain.model.kernels import Kernels

TINY = ModelConfig(d_model=32, n_layers=4, attn_layer_period=4, attn_layer_offset=2,
                   expert_layer_period=2, expert_layer_offset=1, num_experts=4, top_k=2,
                   n_heads=4, d_state=8, scan_chunk=8, fusion_query_block=16, kernels="reference")


def flex_fusion_kernels() -> Kernels:
    """Reference kernels except the fusion attention, which goes through FlexAttention."""
    return Kernels(fusion="flex")


def tiny_config(**changes) -> ModelConfig:
    return dataclasses.replace(TINY, **changes)


def build(config: ModelConfig = TINY, kernels: Kernels | None = None, seed: int = 0) -> JanusForPretraining:
    torch.manual_seed(seed)
    model = JanusForPretraining(config)
    if kernels is not None:
        model.backbone.kernels._kernels["cpu"] = kernels
    return model


def random_bases(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(7, 11, (batch, length), generator=gen)
