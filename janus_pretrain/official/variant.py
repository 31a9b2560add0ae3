"""Which JanusDNA variant a checkpoint holds: its stored config, read against its weights.

The official model config (hyper_parameters.model.config, the JanusDNAConfig keyword arguments)
and the tensors must tell the same story: width, layers, the layer map (mid attention or not,
which layers are MoE), experts, FFN width, Mamba sizes, tied projections, the final MLP (code of
2025-08-01) and the fusion's padded head dim. A disagreement, or an option this framework does
not implement (layer fusion, other attention classes, GQA, projection biases), is one error
naming the key. Official 'no mid attention' is attn_layer_offset 100 (>= period: never true);
ours is attn_layer_period 0.

official_config(ModelConfig) is the reverse: the JanusDNAConfig arguments of our model, as the
official pretraining scripts would pass them.
"""
from __future__ import annotations

import re
from typing import Any

import torch

from janus_pretrain.model_config import ModelConfig
from janus_pretrain.official.names import BACKBONE

OFFICIAL_PAD_MULTIPLE = 8  # JanusDNAModel pads vocab_size up to a multiple of pad_vocab_size_multiple (default 8)
NO_LAYER_OFFSET = 100  # what the official scripts set for 'no mid attention' ('100 means no moe' too)
# what this framework implements of JanusDNAConfig's switches; anything else is refused by name
_REQUIRED = {"layer_fusion": False, "final_attention": True, "layer_fusion_strategy": "pool",
             "final_attention_class": "flex_attention", "bidirectional_attn_tie": False, "is_causal": True,
             "mamba_conv_bias": True, "mamba_proj_bias": False, "hidden_act": "silu", "flexattn_fullattn": False,
             "attention_mask": False, "tie_word_embeddings": False}
# JanusDNAConfig's defaults for keys a stored config may omit (janusdna/configuration_janusdna.py)
_DEFAULTS = {"rms_norm_eps": 1e-6, "router_aux_loss_coef": 0.2, "num_experts_per_tok": 2, "num_experts": 16,
             "expert_layer_period": 2, "expert_layer_offset": 1, "attn_layer_period": 8, "attn_layer_offset": 4,
             "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": "auto",
             "initializer_range": 0.02, "bidirectional": True, "bidirectional_weight_tie": True,
             "mid_single_direction_attention": False, "flex_attn_n_embd": 0, "num_key_value_heads": None,
             "pad_vocab_size_multiple": OFFICIAL_PAD_MULTIPLE, **_REQUIRED}
REFUSED_MODELS = {"caduceus": "Caduceus", "hyena": "HyenaDNA", "mamba": "Mamba", "cnn": "a CNN baseline"}


class VariantError(ValueError):
    """A checkpoint whose config and weights disagree, or a variant we do not implement."""


def truthy(value: Any) -> bool:
    """The stored configs spell booleans in odd ways (janusdna.yaml has `bidirectional: true,`, the
    string 'true,')."""
    if isinstance(value, str):
        return value.strip().rstrip(",").strip().lower() in ("true", "1", "yes")
    return bool(value)


def model_section(hparams: dict, where: str) -> dict:
    """hyper_parameters.model, refusing other model families by name."""
    model = hparams.get("model")
    if not isinstance(model, dict):
        raise VariantError(f"{where}: hyper_parameters has no 'model' section: not a checkpoint of the official "
                           f"JanusDNA train.py")
    name = str(model.get("_name_", ""))
    for marker, family in REFUSED_MODELS.items():
        if marker in name.lower() and "janus" not in name.lower():
            raise VariantError(f"{where}: this is a {family} checkpoint (model._name_={name!r}); janus convert "
                               f"--from janusdna reads JanusDNA checkpoints only")
    if "janus" not in name.lower():
        raise VariantError(f"{where}: model._name_={name!r} is not a JanusDNA model (janusdna_lm, "
                           f"dna_embedding_janusdna)")
    if not isinstance(model.get("config"), dict):
        raise VariantError(f"{where}: hyper_parameters.model.config missing: the variant cannot be read")
    return model


def _shape(state: dict, name: str, where: str) -> tuple[int, ...]:
    if name not in state:
        raise VariantError(f"{where}: no tensor '{name}'")
    return tuple(state[name].shape)


def _check(ok: bool, where: str, key: str, stored: Any, weights: Any) -> None:
    if not ok:
        raise VariantError(f"{where}: model.config.{key}={stored!r} disagrees with the weights ({weights}); the "
                           f"stored config does not describe these tensors")


def model_config_from_official(config: dict, state: dict[str, torch.Tensor], where: str,
                               tokenizer: str = "janusdna") -> ModelConfig:
    """Our ModelConfig for official tensors `state` (backbone names under BACKBONE) and their stored
    JanusDNAConfig arguments, each size checked against the tensors."""
    c = {**_DEFAULTS, **config}
    for key, wanted in _REQUIRED.items():
        got = truthy(c[key]) if isinstance(wanted, bool) else c[key]
        if got != wanted:
            raise VariantError(f"{where}: model.config.{key}={c[key]!r} is a JanusDNA option this framework does not "
                               f"implement (supported: {wanted!r})")
    if not truthy(c["bidirectional"]):
        raise VariantError(f"{where}: model.config.bidirectional={c['bidirectional']!r}: unidirectional JanusDNA is "
                           f"not supported")
    vocab, d_model = _shape(state, BACKBONE + "embed_tokens.weight", where)
    heads = int(c.get("num_attention_heads", 0) or 0)
    if not heads or d_model % heads:
        raise VariantError(f"{where}: model.config.num_attention_heads={heads!r} does not divide hidden_size {d_model}")
    if c["num_key_value_heads"] not in (None, heads):
        raise VariantError(f"{where}: model.config.num_key_value_heads={c['num_key_value_heads']} (grouped-query "
                           f"attention) is not supported")
    _check(int(c.get("hidden_size", d_model)) == d_model, where, "hidden_size", c.get("hidden_size"), f"embedding width {d_model}")
    multiple = int(c["pad_vocab_size_multiple"])
    stored_vocab = int(c.get("vocab_size", 12))
    padded = stored_vocab + (-stored_vocab) % multiple
    _check(padded == vocab, where, "vocab_size", stored_vocab, f"embedding rows {vocab} (padded to a multiple of {multiple})")
    layer_ids = sorted({int(m.group(1)) for k in state for m in [re.match(re.escape(BACKBONE) + r"layers\.(\d+)\.", k)] if m})
    n_layers = layer_ids[-1] + 1 if layer_ids else 0
    _check(int(c.get("num_hidden_layers", n_layers)) == n_layers, where, "num_hidden_layers",
           c.get("num_hidden_layers"), f"{n_layers} layers")
    attn_period, attn_offset = int(c["attn_layer_period"]), int(c["attn_layer_offset"])
    expert_period, expert_offset = int(c["expert_layer_period"]), int(c["expert_layer_offset"])
    is_attention = [attn_period > 0 and i % attn_period == attn_offset for i in range(n_layers)]
    for i in range(n_layers):
        found = any(k.startswith(f"{BACKBONE}layers.{i}.attn.") for k in state)
        _check(found == is_attention[i], where, "attn_layer_period/offset", f"{attn_period}/{attn_offset}",
               f"layer {i} is {'attention' if found else 'Mamba'}")
    if any(is_attention) and not truthy(c["mid_single_direction_attention"]):
        raise VariantError(f"{where}: model.config.mid_single_direction_attention=false (one attention over both "
                           f"streams) is not supported; the official scripts use true")
    moe_layers = [i for i in range(n_layers) if any(k.startswith(f"{BACKBONE}layers.{i}.") and ".router." in k for k in state)]
    expected_moe = [i for i in range(n_layers) if expert_period > 0 and i % expert_period == expert_offset]
    _check(moe_layers == expected_moe, where, "expert_layer_period/offset", f"{expert_period}/{expert_offset}",
           f"MoE layers {moe_layers}")
    num_experts = int(c["num_experts"])
    if moe_layers:
        block = f"{BACKBONE}layers.{moe_layers[0]}." + ("attn" if is_attention[moe_layers[0]] else "mamba_module")
        router = _shape(state, f"{block}.feed_forward_fwd.router.weight", where)
        _check(router[0] == num_experts, where, "num_experts", num_experts, f"router of {router[0]} experts")
        ffn = _shape(state, f"{block}.feed_forward_fwd.experts.0.gate_proj.weight", where)[0]
    else:
        ffn = _shape(state, f"{BACKBONE}final_attention.feed_forward.gate_proj.weight", where)[0]
    _check(int(c.get("intermediate_size", ffn)) == ffn, where, "intermediate_size", c.get("intermediate_size"), f"FFN width {ffn}")
    mamba = next((i for i in range(n_layers) if not is_attention[i]), None)
    d_state, d_conv, expand, dt_rank = int(c["mamba_d_state"]), int(c["mamba_d_conv"]), int(c["mamba_expand"]), None
    tied = truthy(c["bidirectional_weight_tie"])
    if mamba is not None:
        mixer = f"{BACKBONE}layers.{mamba}.mamba_module.mamba_fwd."
        d_inner, n = _shape(state, mixer + "A_log", where)
        _check(n == d_state, where, "mamba_d_state", d_state, f"A_log of {n} states")
        _check(d_inner == expand * d_model, where, "mamba_expand", expand, f"inner width {d_inner}")
        _check(_shape(state, mixer + "conv1d.weight", where)[-1] == d_conv, where, "mamba_d_conv", d_conv, "conv width")
        dt_rank = _shape(state, mixer + "dt_proj.weight", where)[1]
        rev = f"{BACKBONE}layers.{mamba}.mamba_module.mamba_rev.in_proj.weight"
        same = rev in state and torch.equal(state[mixer + "in_proj.weight"], state[rev])
        _check(same == tied, where, "bidirectional_weight_tie", c["bidirectional_weight_tie"],
               "the two streams' in_proj are " + ("equal" if same else "different"))
    stored_rank = c["mamba_dt_rank"]
    auto_rank = -(-d_model // 16)
    if dt_rank is not None:
        _check(stored_rank == "auto" and dt_rank == auto_rank or stored_rank == dt_rank, where, "mamba_dt_rank",
               stored_rank, f"dt_proj rank {dt_rank}")
    final_mlp = f"{BACKBONE}final_mlp.0.weight" in state
    head_dim = d_model // heads
    padded_dim = int(c["flex_attn_n_embd"]) // heads
    if padded_dim < head_dim:
        raise VariantError(f"{where}: model.config.flex_attn_n_embd={c['flex_attn_n_embd']} gives a fusion head dim of "
                           f"{padded_dim}, below the real {head_dim}: the official code would cut heads; refusing")
    return ModelConfig(
        vocab_size=vocab, d_model=d_model, n_layers=n_layers,
        attn_layer_period=attn_period if any(is_attention) else 0, attn_layer_offset=attn_offset if any(is_attention) else 0,
        expert_layer_period=expert_period if moe_layers else 0, expert_layer_offset=expert_offset if moe_layers else 0,
        num_experts=num_experts, top_k=int(c["num_experts_per_tok"]), intermediate_size=ffn, n_heads=heads,
        d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=0 if dt_rank in (None, auto_rank) else dt_rank, tie_mamba_projections=tied,
        final_mlp=final_mlp, final_mlp_kind="janusdna", fusion_scale_dim=padded_dim if padded_dim != head_dim else 0,
        tokenizer=tokenizer, router_aux_loss_coef=float(c["router_aux_loss_coef"]),
        initializer_range=float(c["initializer_range"]), norm_eps=float(c["rms_norm_eps"]),
        init="janusdna", aux_loss_pooling="stream_pooled", loss_targets="non_pad")


def official_config(model: ModelConfig, where: str = "<model>") -> dict[str, Any]:
    """JanusDNAConfig keyword arguments of `model`, as the official pretraining scripts pass them."""
    problems = []
    if model.objective != "janus":
        problems.append(f"model.objective={model.objective!r} (the official model is janus)")
    if model.final_mlp and model.final_mlp_kind != "janusdna":
        problems.append("model.final_mlp_kind=swiglu (the official final MLP is final_mlp_kind janusdna)")
    if model.vocab_size % OFFICIAL_PAD_MULTIPLE or model.vocab_size < 12:
        problems.append(f"model.vocab_size={model.vocab_size}")
    if problems:
        raise VariantError(f"{where}: not expressible as an official JanusDNA checkpoint: {'; '.join(problems)}")
    no_attention = model.attn_layer_period == 0
    no_experts = model.expert_layer_period == 0
    return {
        "_target_": "janusdna.configuration_janusdna.JanusDNAConfig",
        "vocab_size": 12, "hidden_size": model.d_model, "intermediate_size": model.ffn_dim,
        "num_hidden_layers": model.n_layers, "num_attention_heads": model.n_heads,
        "flex_attn_n_embd": (model.fusion_scale_dim or model.head_dim) * model.n_heads,
        "attn_layer_period": 8 if no_attention else model.attn_layer_period,
        "attn_layer_offset": NO_LAYER_OFFSET if no_attention else model.attn_layer_offset,
        "expert_layer_period": 2 if no_experts else model.expert_layer_period,
        "expert_layer_offset": NO_LAYER_OFFSET if no_experts else model.expert_layer_offset,
        "num_experts": model.num_experts, "num_experts_per_tok": model.top_k,
        "mamba_d_state": model.d_state, "mamba_d_conv": model.d_conv, "mamba_expand": model.expand,
        "mamba_dt_rank": model.dt_rank or "auto", "rms_norm_eps": model.norm_eps,
        "initializer_range": model.initializer_range, "router_aux_loss_coef": model.router_aux_loss_coef,
        "output_router_logits": True, "bidirectional": True, "bidirectional_strategy": "add",
        "bidirectional_weight_tie": model.tie_mamba_projections, "mid_single_direction_attention": True,
        "attn_implementation": "flash_attention_2", **_REQUIRED,
    }
