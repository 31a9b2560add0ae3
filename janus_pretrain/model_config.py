"""The model section of a run config: architecture, objective and runtime knobs of a Janus model.

Its own module so that model code and exports (which carry their code, janus_pretrain/hf/) need
this and config_schema.py only, not the whole run config.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from janus_pretrain.config_schema import (FRACTION, NON_NEGATIVE, POSITIVE, ConfigError, Range, build_section,
                                          check_floats, check_int_limits)


@dataclass
class ModelConfig:
    objective: Literal["janus", "mlm", "clm"] = "janus"  # training objective (docs/objectives.md); configs and exports without it are janus
    vocab_size: int = 16  # tokenizer vocabulary padded to 16 (janus_pretrain.tokenizer)
    d_model: int = 72  # width D of both streams and of the fusion block
    n_layers: int = 8  # decoder layers; each holds a forward and a backward stream block
    attn_layer_period: int = 8  # a stream mixer is attention where i % period == offset; 0 = never
    attn_layer_offset: int = 4  # see attn_layer_period; must be < period
    expert_layer_period: int = 2  # FFN is a top-k MoE where i % period == offset; 0 = never
    expert_layer_offset: int = 1  # see expert_layer_period; must be < period
    num_experts: int = 16  # experts per MoE layer (global count, before expert parallelism)
    top_k: int = 2  # experts each token is routed to
    intermediate_size: int = 0  # SwiGLU hidden width of dense FFNs and of each expert; 0 = 4 * d_model
    n_heads: int = 4  # heads of per-stream attention and of the fusion attention
    d_state: int = 16  # Mamba SSM state size N
    d_conv: int = 4  # Mamba depthwise causal conv width
    expand: int = 2  # Mamba inner width = expand * d_model
    dt_rank: int = 0  # Mamba dt projection rank; 0 = ceil(d_model / 16)
    dt_min: float = 0.001  # Mamba dt initialisation range (dt bias = inverse softplus of dt)
    dt_max: float = 0.1  # see dt_min
    dt_init_floor: float = 1.0e-4  # lower clamp of the initial dt
    tie_mamba_projections: bool = True  # share Mamba in/out projections between the two streams
    final_mlp: bool = False  # a small MLP (residual) between the final norm and the LM head
    final_mlp_kind: Literal["swiglu", "janusdna"] = "swiglu"  # swiglu: bias-free SwiGLU of width ffn_dim; janusdna: the official Linear(D, 2D) SiLU Linear(2D, D) SiLU, with biases
    fusion_scale_dim: int = 0  # fusion softmax scale is 1/sqrt(this); 0 = the head dim (official JanusDNA: flex_attn_n_embd / n_heads, its zero-padded head dim)
    tokenizer: Literal["janus", "janusdna", "janusdna_char"] = "janus"  # DNA text -> ids (janus_pretrain/tokenizer.py): janus (IUPAC -> N), or the official pretraining / benchmark-loader mappings
    router_aux_loss_coef: float = 0.2  # weight of the MoE load-balancing loss in the total loss
    initializer_range: float = 0.02  # std of normal init for linear and embedding weights
    norm_eps: float = 1.0e-5  # RMSNorm epsilon (official JanusDNA: 1e-6)
    init: Literal["janus", "janusdna"] = "janus"  # fresh weights: janus (Mamba dt init, normal q/k/v) or the official JanusDNA init (docs/janusdna.md)
    aux_loss_pooling: Literal["layer_mean", "stream_pooled"] = "layer_mean"  # MoE load balancing: mean of per-layer losses, or official: router statistics pooled over a stream's layers, forward + backward summed
    loss_targets: Literal["bases", "non_pad"] = "bases"  # CE targets: A/C/G/T positions, or official: every position that is not [PAD]
    kernels: Literal["auto", "cuda", "reference"] = "auto"  # auto: each CUDA package kernel that imports, on a GPU; cuda: mamba_ssm + causal_conv1d required
    fusion_kernel: Literal["auto", "pieces", "flex", "reference"] = "auto"  # auto: causal pieces merged by log-sum-exp, or the exact reference when kernels resolve to reference
    activation_checkpointing: Literal["none", "layer", "block"] = "none"  # recompute per layer or per sub-block (+ fusion block, FFN hiddens)
    scan_chunk: int = 64  # chunk length of the CPU chunked selective scan
    fusion_query_block: int = 1024  # query rows per block in the reference fusion attention
    loss_chunk: int = 0  # positions per chunk for head + loss (bounds logits memory); 0 = all at once
    ffn_chunk: int = 65536  # rows per recomputed FFN/expert chunk when activation_checkpointing is on; 0 = all rows
    mlm_probability: float = 0.15  # objective mlm: fraction of A/C/G/T positions chosen for the loss
    mlm_mask_fraction: float = 0.8  # objective mlm: chosen positions replaced by [MASK]
    mlm_random_fraction: float = 0.1  # objective mlm: chosen positions replaced by a random base (the rest stay)

    # far above any model this framework trains (the paper's largest: d_model 256, 8 layers), far below
    # what would allocate for minutes before failing (docs/training.md, 'Limits')
    INT_LIMITS: ClassVar[dict[str, int]] = {"vocab_size": 2 ** 16, "d_model": 2 ** 16, "n_layers": 1024,
                                            "num_experts": 4096, "top_k": 4096, "intermediate_size": 2 ** 20,
                                            "n_heads": 1024, "d_state": 1024, "d_conv": 64, "expand": 64,
                                            "dt_rank": 2 ** 16}
    FLOAT_RANGES: ClassVar[dict[str, Range]] = {
        "dt_min": POSITIVE, "dt_max": POSITIVE, "dt_init_floor": POSITIVE, "router_aux_loss_coef": NON_NEGATIVE,
        "initializer_range": POSITIVE, "norm_eps": POSITIVE,
        "mlm_probability": Range(0.0, 1.0, open_low=True), "mlm_mask_fraction": FRACTION, "mlm_random_fraction": FRACTION}
    # fields that choose how the model runs, not what it computes (a checkpoint's weights load under any value)
    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"kernels", "fusion_kernel", "activation_checkpointing", "scan_chunk", "fusion_query_block", "loss_chunk",
         "ffn_chunk", "mlm_probability", "mlm_mask_fraction", "mlm_random_fraction", "init", "aux_loss_pooling",
         "loss_targets"})  # mlm_*, init, aux_loss_pooling, loss_targets: the training recipe

    def architecture(self) -> dict[str, Any]:
        """The fields that define the weights and what they compute (everything but RUNTIME_FIELDS)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUNTIME_FIELDS}

    @property
    def ffn_dim(self) -> int:
        return self.intermediate_size or 4 * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def fusion_softmax_scale(self) -> float:
        """1/sqrt(d) of the fusion attention's scores, d = fusion_scale_dim or the head dim."""
        return (self.fusion_scale_dim or self.head_dim) ** -0.5

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_value(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    def is_attention_layer(self, i: int) -> bool:
        return self.attn_layer_period > 0 and i % self.attn_layer_period == self.attn_layer_offset

    def is_expert_layer(self, i: int) -> bool:
        return self.expert_layer_period > 0 and i % self.expert_layer_period == self.expert_layer_offset

    def layer_map(self) -> list[tuple[str, str]]:
        """(mixer, ffn) per layer, e.g. [("mamba", "swiglu"), ("mamba", "moe"), ...]."""
        return [("attention" if self.is_attention_layer(i) else "mamba",
                 "moe" if self.is_expert_layer(i) else "swiglu") for i in range(self.n_layers)]

    def describe_layers(self) -> str:
        rows = [f"  layer {i}: {mixer:9s} + {ffn}" for i, (mixer, ffn) in enumerate(self.layer_map())]
        experts = f"{self.num_experts} experts, top-{self.top_k}" if any(f == "moe" for _, f in self.layer_map()) else "no MoE"
        shape = {"janus": "x2 streams, {}, then fusion attention (Janus mask)",
                 "mlm": "x2 streams, {}, then fusion attention (unmasked)",
                 "clm": "forward stream only, {}, no fusion"}[self.objective].format(experts)
        return "\n".join([f"{self.objective} layer map ({shape}):", *rows])

    def validate(self, where: str = "<config>") -> None:
        check_floats(self, "model", where)
        check_int_limits(self, "model", where)
        if self.dt_min > self.dt_max:
            raise ConfigError(f"{where}: model.dt_min={self.dt_min} must be <= model.dt_max={self.dt_max}")
        for period, offset, name in ((self.attn_layer_period, self.attn_layer_offset, "attn_layer"),
                                     (self.expert_layer_period, self.expert_layer_offset, "expert_layer")):
            if period < 0 or offset < 0:
                raise ConfigError(f"{where}: model.{name}_period/offset must be >= 0 (got {period}/{offset})")
            if period > 0 and offset >= period:
                raise ConfigError(f"{where}: model.{name}_offset={offset} must be < {name}_period={period}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"{where}: model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}")
        if self.has_moe() and not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(f"{where}: model.top_k={self.top_k} must be in [1, num_experts={self.num_experts}]")
        for key in ("vocab_size", "d_model", "n_layers", "d_state", "d_conv", "expand", "scan_chunk", "fusion_query_block"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{where}: model.{key} must be positive (got {getattr(self, key)})")
        if self.fusion_scale_dim and self.fusion_scale_dim < self.head_dim:
            raise ConfigError(f"{where}: model.fusion_scale_dim={self.fusion_scale_dim} is below the head dim "
                              f"{self.head_dim} (d_model / n_heads); use 0 for the head dim, or the official padded "
                              f"dim flex_attn_n_embd / n_heads")
        if self.fusion_scale_dim < 0:
            raise ConfigError(f"{where}: model.fusion_scale_dim must be >= 0 (got {self.fusion_scale_dim})")
        if self.vocab_size < 12:
            raise ConfigError(f"{where}: model.vocab_size={self.vocab_size} is smaller than the tokenizer's 12 ids")
        if self.mlm_mask_fraction + self.mlm_random_fraction > 1:
            raise ConfigError(f"{where}: model.mlm_mask_fraction={self.mlm_mask_fraction} + mlm_random_fraction="
                              f"{self.mlm_random_fraction} must be at most 1 (the rest of the chosen positions stay "
                              f"unchanged); lower one of them")

    def has_moe(self) -> bool:
        return any(ffn == "moe" for _, ffn in self.layer_map())


def model_config_from_dict(raw: dict, where: str = "<dict>") -> ModelConfig:
    config = build_section(ModelConfig, raw, "model", where)
    config.validate(where)
    return config


def architecture_differences(theirs: ModelConfig, ours: ModelConfig) -> dict[str, tuple[Any, Any]]:
    """The one architecture-equality check (resume, checkpoint.init_from, janus convert --config):
    {key: (theirs, ours)} for every key of architecture() whose value differs, sorted by key. Which
    keys count is decided by RUNTIME_FIELDS and architecture() alone."""
    a, b = theirs.architecture(), ours.architecture()
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def describe_differences(differences: dict[str, tuple[Any, Any]]) -> str:
    """'model.d_model: 16 there, 24 here; ...' for architecture_differences' result."""
    return "; ".join(f"model.{k}: {a!r} there, {b!r} here" for k, (a, b) in differences.items())
