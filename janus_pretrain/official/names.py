"""Official JanusDNA state-dict names <-> ours, generated from one table per layer kind.

Official names (Lightning prefix `model.`, then JanusDNAForCausalLM: `model.` backbone and
`lm_head`; a fine-tuned checkpoint holds the same backbone names beside its `decoder.*` head):

  model.embed_tokens                                   -> backbone.embedding
  layers.i.mamba_module.mamba_fwd.{in,out}_proj        -> backbone.layers.i.mamba_{in,out}_proj (tied:
                                                          mamba_rev's copies are the same tensors)
  layers.i.mamba_module.mamba_{fwd,rev}.<p>            -> backbone.layers.i.{fwd,bwd}.mixer.<p>
      p: A_log D conv1d.{weight,bias} x_proj dt_proj.{weight,bias}; {dt,b,c}_layernorm -> {dt,b,c}_norm
  layers.i.{mamba_module,attn}.input_layernorm_{fwd,bwd}  -> backbone.layers.i.{fwd,bwd}.mixer_norm
  layers.i.{mamba_module,attn}.pre_ff_layernorm_{fwd,bwd} -> backbone.layers.i.{fwd,bwd}.ffn_norm
  layers.i.{mamba_module,attn}.feed_forward_{fwd,bwd}.*   -> backbone.layers.i.{fwd,bwd}.ffn.*
  layers.i.attn.self_attn_{fwd,bwd}.{q,k,v}_proj       -> backbone.layers.i.{fwd,bwd}.mixer.qkv_proj (rows q;k;v)
  layers.i.attn.self_attn_{fwd,bwd}.o_proj             -> backbone.layers.i.{fwd,bwd}.mixer.out_proj
  final_attention.self_attn.{q,k,v}_proj / o_projs.0   -> backbone.fusion.attn.qkv_proj / out_proj
  final_attention.{input,pre_ff}_layernorm / feed_forward -> backbone.fusion.{attn_norm,ffn_norm,ffn}
  final_layernorm                                      -> backbone.norm_f
  final_mlp.{0,2}                                      -> mlp.{0,2}      (code of 2025-08-01)
  lm_head (beside the backbone)                        -> lm_head

Every tensor is copied as it is (qkv: concatenated / split on rows), so a round trip is bitwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from janus_pretrain.model_config import ModelConfig

BACKBONE = "model.model."  # the backbone prefix in every official Lightning checkpoint
HEAD = "model.lm_head.weight"
IGNORED_SUFFIXES = ("num_tokens.count",)  # Lightning's torchmetrics counters: not weights
_MAMBA_PARAMS = [("A_log", "A_log"), ("D", "D"), ("conv1d.weight", "conv1d.weight"), ("conv1d.bias", "conv1d.bias"),
                 ("x_proj.weight", "x_proj.weight"), ("dt_proj.weight", "dt_proj.weight"),
                 ("dt_proj.bias", "dt_proj.bias"), ("dt_layernorm.weight", "dt_norm.weight"),
                 ("b_layernorm.weight", "b_norm.weight"), ("c_layernorm.weight", "c_norm.weight")]
_STREAMS = (("fwd", "fwd", "mamba_fwd"), ("bwd", "bwd", "mamba_rev"))  # (official suffix, ours, official mixer)


@dataclass(frozen=True)
class NamePair:
    official: tuple[str, ...]  # one name, or q/k/v (kind qkv), or the two tied copies (kind tied)
    ours: str
    kind: str = "same"  # same | qkv | tied


def _ffn(pairs: list, official: str, ours: str, config: ModelConfig, moe: bool) -> None:
    names = ["router.weight"] + [f"experts.{e}.{p}_proj.weight" for e in range(config.num_experts)
                                 for p in ("gate", "up", "down")] if moe else \
        [f"{p}_proj.weight" for p in ("gate", "up", "down")]
    pairs.extend(NamePair((f"{official}.{n}",), f"{ours}.{n}") for n in names)


def name_pairs(config: ModelConfig) -> list[NamePair]:
    """Every tensor of a JanusForPretraining of `config` and the official name(s) it comes from."""
    pairs = [NamePair((BACKBONE + "embed_tokens.weight",), "backbone.embedding.weight")]
    for i, (mixer, ffn) in enumerate(config.layer_map()):
        ours = f"backbone.layers.{i}"
        block = f"{BACKBONE}layers.{i}." + ("attn" if mixer == "attention" else "mamba_module")
        if mixer == "mamba":
            if config.tie_mamba_projections:
                for proj in ("in_proj", "out_proj"):
                    pairs.append(NamePair((f"{block}.mamba_fwd.{proj}.weight", f"{block}.mamba_rev.{proj}.weight"),
                                          f"{ours}.mamba_{proj}.weight", "tied"))
        for suffix, stream, official_mixer in _STREAMS:
            if mixer == "mamba":
                params = list(_MAMBA_PARAMS)
                if not config.tie_mamba_projections:
                    params += [("in_proj.weight", "in_proj.weight"), ("out_proj.weight", "out_proj.weight")]
                pairs.extend(NamePair((f"{block}.{official_mixer}.{o}",), f"{ours}.{stream}.mixer.{w}") for o, w in params)
            else:
                attn = f"{block}.self_attn_{suffix}"
                pairs.append(NamePair(tuple(f"{attn}.{p}_proj.weight" for p in "qkv"),
                                      f"{ours}.{stream}.mixer.qkv_proj.weight", "qkv"))
                pairs.append(NamePair((f"{attn}.o_proj.weight",), f"{ours}.{stream}.mixer.out_proj.weight"))
            pairs.append(NamePair((f"{block}.input_layernorm_{suffix}.weight",), f"{ours}.{stream}.mixer_norm.weight"))
            pairs.append(NamePair((f"{block}.pre_ff_layernorm_{suffix}.weight",), f"{ours}.{stream}.ffn_norm.weight"))
            _ffn(pairs, f"{block}.feed_forward_{suffix}", f"{ours}.{stream}.ffn", config, ffn == "moe")
    fusion = BACKBONE + "final_attention."
    pairs.append(NamePair(tuple(f"{fusion}self_attn.{p}_proj.weight" for p in "qkv"), "backbone.fusion.attn.qkv_proj.weight",
                          "qkv"))
    pairs.append(NamePair((f"{fusion}self_attn.o_projs.0.weight",), "backbone.fusion.attn.out_proj.weight"))
    pairs.append(NamePair((f"{fusion}input_layernorm.weight",), "backbone.fusion.attn_norm.weight"))
    pairs.append(NamePair((f"{fusion}pre_ff_layernorm.weight",), "backbone.fusion.ffn_norm.weight"))
    _ffn(pairs, f"{fusion}feed_forward", "backbone.fusion.ffn", config, moe=False)
    pairs.append(NamePair((BACKBONE + "final_layernorm.weight",), "backbone.norm_f.weight"))
    if config.final_mlp:
        pairs.extend(NamePair((f"{BACKBONE}final_mlp.{i}.{p}",), f"mlp.{i}.{p}") for i in (0, 2) for p in ("weight", "bias"))
    pairs.append(NamePair((HEAD,), "lm_head.weight"))
    return pairs


class NameMapError(ValueError):
    """Official tensors that do not map onto the model; the message names the key."""


def official_to_ours(official: dict[str, torch.Tensor], config: ModelConfig, where: str,
                     head_optional: bool = False) -> dict[str, torch.Tensor]:
    """Our state dict from official tensors; every official tensor must be used (or be a known
    non-weight), every one of ours found. head_optional: a fine-tuned checkpoint has no lm_head."""
    ours, used = {}, set()
    for pair in name_pairs(config):
        if pair.ours == "lm_head.weight" and head_optional and HEAD not in official:
            continue
        missing = [n for n in pair.official if n not in official]
        if missing:
            raise NameMapError(f"{where}: no tensor '{missing[0]}' (needed for {pair.ours}); the checkpoint does "
                               f"not hold the variant its config describes")
        tensors = [official[n] for n in pair.official]
        used.update(pair.official)
        if pair.kind == "qkv":
            ours[pair.ours] = torch.cat(tensors, dim=0)
        elif pair.kind == "tied":
            if not torch.equal(tensors[0], tensors[1]):
                raise NameMapError(f"{where}: '{pair.official[0]}' and '{pair.official[1]}' differ, but the config ties "
                                   f"the two streams' Mamba projections (bidirectional_weight_tie)")
            ours[pair.ours] = tensors[0]
        else:
            ours[pair.ours] = tensors[0]
    left = sorted(n for n in official if n not in used and not n.endswith(IGNORED_SUFFIXES)
                  and not n.startswith("decoder."))
    if left:
        raise NameMapError(f"{where}: cannot map tensor '{left[0]}' ({len(left)} unmapped in all) onto the model")
    return ours


def ours_to_official(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Official names for our state dict (tied projections: one tensor under both names)."""
    official = {}
    for pair in name_pairs(config):
        tensor = state[pair.ours]
        if pair.kind == "qkv":
            for name, part in zip(pair.official, tensor.chunk(3, dim=0)):
                official[name] = part.clone()
        else:
            for name in pair.official:
                official[name] = tensor
    return official
