"""Optimizer parameter groups, learning-rate schedule and the derived DeepSpeed JSON."""
from __future__ import annotations

import pytest
import torch

from janus_pretrain.config import ConfigError, ModelConfig, OptimizerConfig, RunConfig, ScheduleConfig
from janus_pretrain.config import batch_plan
from janus_pretrain.engine.deepspeed_config import deepspeed_config
from janus_pretrain.engine.optim import build_optimizer, lr_factor, parameter_groups
from janus_pretrain.model import JanusForPretraining

MODEL = ModelConfig(d_model=16, n_layers=2, attn_layer_period=2, attn_layer_offset=0, expert_layer_period=2,
                    expert_layer_offset=1, num_experts=4, top_k=2, intermediate_size=32, n_heads=2, d_state=4,
                    kernels="reference")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return JanusForPretraining(MODEL)


def test_every_parameter_is_in_exactly_one_group(model):
    groups = parameter_groups(model, 0.1)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    for group in groups:
        assert [id(p) for p in group["params"]] == [id(dict(model.named_parameters())[n]) for n in group["param_names"]]


def test_no_weight_decay_on_biases_norms_embedding_A_log_and_D(model):
    decayed = {n for g in parameter_groups(model, 0.1) if g["weight_decay"] > 0 for n in g["param_names"]}
    params = dict(model.named_parameters())
    for name, param in params.items():
        exempt = param.ndim < 2 or "A_log" in name or name.endswith(".D") or "embed" in name
        assert (name not in decayed) == exempt, name
    assert any("A_log" in n for n in params) and any("embed" in n for n in params)


def test_expert_parameters_form_moe_groups_named_after_their_expert_group(model):
    for group in parameter_groups(model, 0.1):
        experts = [".experts." in n for n in group["param_names"]]
        assert all(experts) == group.get("moe", False) and (all(experts) or not any(experts))
        if group.get("moe"):
            assert group["name"] == "ep_size_1"
    assert isinstance(build_optimizer(model, OptimizerConfig()), torch.optim.AdamW)


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    schedule, peak, steps = ScheduleConfig(warmup_fraction=0.1, min_lr=1e-4), 8e-3, 1000
    lrs = [peak * lr_factor(s, steps, schedule, peak) for s in range(steps)]
    assert lrs[0] == pytest.approx(peak / 100) and lrs[99] == pytest.approx(peak)
    assert all(b > a for a, b in zip(lrs[:99], lrs[1:100]))
    assert all(b <= a for a, b in zip(lrs[100:], lrs[101:]))
    assert lrs[550] == pytest.approx((peak + 1e-4) / 2, rel=1e-2)  # cosine midpoint
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-2)


def test_deepspeed_passthrough_adds_keys_but_cannot_contradict_derived_ones():
    config = RunConfig(deepspeed={"zero_optimization": {"reduce_bucket_size": 1000}, "wall_clock_breakdown": False})
    config.data.seq_len, config.train.micro_batch, config.train.global_batch_tokens = 128, 2, 1024
    ds = deepspeed_config(config, batch_plan(config, 2))
    assert ds["zero_optimization"] == {"stage": 2, "contiguous_gradients": True, "reduce_scatter": True,
                                       "reduce_bucket_size": 1000}
    assert (ds["train_batch_size"], ds["gradient_accumulation_steps"]) == (8, 2)
    config.deepspeed = {"gradient_accumulation_steps": 4}
    with pytest.raises(ConfigError, match="deepspeed.gradient_accumulation_steps=4 conflicts"):
        deepspeed_config(config, batch_plan(config, 2))
