"""The Janus model: two causal streams, a fusion attention with the Janus mask, and a read-out
that predicts every position from both sides without seeing it (docs/model.md).

model.objective picks what the same building blocks are trained for (docs/objectives.md):
  janus  the model below, loss at every A/C/G/T position
  mlm    the same streams and fusion block, fusion unmasked, out[p] = F[p] + B[p], inputs
         corrupted BERT-style (model/mlm_corruption.py), loss at the chosen positions only
  clm    the forward stream only (no backward stream, no fusion): out[p] = h_f[p] predicts x[p+1]

  e = E(x)                                   # (B, L, D)
  h_f = e ; h_b = reverse(e)                 # each causal in its own order
  n_layers x [pre-norm mixer + pre-norm FFN] per stream (own weights; Mamba in/out projections
                                              optionally shared between streams)
  H = [h_f ; reverse(h_b)]                   # (B, 2L, D), fused under the Janus mask
  out[p] = F[p-1] + B[p+1]                   # F, B = fused forward / backward rows
  logits = head(mlp(norm(out)))              # (B, L, vocab)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from janus_pretrain.model_config import ModelConfig
from janus_pretrain.model.attention import CausalSelfAttention, FusionAttention
from janus_pretrain.model.context_parallel import ContextParallel, janus_readout_across_slices
from janus_pretrain.model.kernels import KernelSlot
from janus_pretrain.model.init import janusdna_init_
from janus_pretrain.model.layers import RMSNorm, SwiGLU, final_mlp, init_linear
from janus_pretrain.model.loss import janus_loss, next_base_targets
from janus_pretrain.model.mlm_corruption import mlm_corrupt
from janus_pretrain.model.mamba import MambaMixer, mamba_projections
from janus_pretrain.model.moe import MoEFeedForward, pooled_load_balancing_loss


def _maybe_checkpoint(enabled: bool, fn, *args):
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class StreamBlock(nn.Module):
    """One layer of one stream: pre-norm mixer and pre-norm FFN (dense or MoE), with residuals."""

    def __init__(self, config: ModelConfig, index: int, kernels: KernelSlot, ep_group, ep_group_name,
                 shared_projections=None, name: str = "", context: ContextParallel | None = None,
                 backward_stream: bool = False):
        super().__init__()
        stream = None if context is None else context.stream(backward_stream)
        std = config.initializer_range
        recompute = config.activation_checkpointing != "none"  # FFN hiddens recomputed in backward
        self.mixer_norm = RMSNorm(config.d_model, config.norm_eps)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        if config.is_attention_layer(index):
            self.mixer = CausalSelfAttention(config.d_model, config.n_heads, std, kernels, stream)
        else:
            self.mixer = MambaMixer(config, kernels, shared_projections, stream)
        self.pooled_aux = config.aux_loss_pooling == "stream_pooled"
        if config.is_expert_layer(index):
            self.ffn = MoEFeedForward(config.d_model, config.ffn_dim, config.num_experts, config.top_k, std,
                                      ep_group, ep_group_name, layer_name=name, recompute=recompute,
                                      chunk=config.ffn_chunk, pooled_aux=self.pooled_aux, context=context)
        else:
            self.ffn = SwiGLU(config.d_model, config.ffn_dim, std, recompute, config.ffn_chunk)
        self.checkpoint_blocks = config.activation_checkpointing == "block"

    def _mix(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.mixer(self.mixer_norm(h))

    def _feed_forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.ffn(self.ffn_norm(h))
        if isinstance(out, tuple):  # MoE: (output, aux loss or, pooled, router statistics)
            return h + out[0], out[1]
        return h + out, None if self.pooled_aux else h.new_zeros((), dtype=torch.float32)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:  # (B, L, D)
        h = _maybe_checkpoint(self.checkpoint_blocks, self._mix, h)
        return _maybe_checkpoint(self.checkpoint_blocks, self._feed_forward, h)


class JanusLayer(nn.Module):
    """Layer i of both streams; owns the Mamba projections when they are tied across streams."""

    def __init__(self, config: ModelConfig, index: int, kernels: KernelSlot, ep_group=None, ep_group_name=None,
                 context: ContextParallel | None = None):
        super().__init__()
        both_streams = config.objective != "clm"
        # "layer" checkpoints each stream's block on its own: the same inputs are kept, but
        # backward recomputes one stream at a time, halving the largest recomputed phase
        self.checkpoint_streams = config.activation_checkpointing == "layer"
        shared = None
        if config.tie_mamba_projections and not config.is_attention_layer(index):
            self.mamba_in_proj, self.mamba_out_proj = shared = mamba_projections(config)
        self.fwd = StreamBlock(config, index, kernels, ep_group, ep_group_name, shared, f"layers.{index}.fwd",
                               context)
        self.bwd = StreamBlock(config, index, kernels, ep_group, ep_group_name, shared,
                               f"layers.{index}.bwd", context, backward_stream=True) if both_streams else None

    def forward(self, h_f: torch.Tensor, h_b: torch.Tensor | None):
        """-> (h_f, h_b, aux_f, aux_b): each stream's aux term (None without one; clm: no h_b, aux_b)."""
        h_f, aux_f = _maybe_checkpoint(self.checkpoint_streams, self.fwd, h_f)
        if self.bwd is None:  # clm: the forward stream alone
            return h_f, None, aux_f, None
        h_b, aux_b = _maybe_checkpoint(self.checkpoint_streams, self.bwd, h_b)
        return h_f, h_b, aux_f, aux_b


class FusionBlock(nn.Module):
    """Global attention over the 2L concatenated rows under the Janus mask, then a SwiGLU.

    Under activation checkpointing both sub-blocks are recomputed in backward, so across the
    backbone the block keeps only its two (B, 2L, D) residual inputs.
    """

    def __init__(self, config: ModelConfig, kernels: KernelSlot, context: ContextParallel | None = None):
        super().__init__()
        std = config.initializer_range
        self.checkpoint = config.activation_checkpointing != "none"
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        scale = config.fusion_softmax_scale if config.fusion_scale_dim else None  # None: the kernels' 1/sqrt(Dh)
        self.attn = FusionAttention(config.d_model, config.n_heads, std, kernels, config.fusion_query_block,
                                    janus_mask=config.objective == "janus", scale=scale, context=context)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = SwiGLU(config.d_model, config.ffn_dim, std, self.checkpoint, config.ffn_chunk)

    def _attend(self, rows: torch.Tensor) -> torch.Tensor:
        return rows + self.attn(self.attn_norm(rows))

    def _feed_forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows + self.ffn(self.ffn_norm(rows))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:  # (B, 2L, D)
        rows = _maybe_checkpoint(self.checkpoint, self._attend, rows)
        return _maybe_checkpoint(self.checkpoint, self._feed_forward, rows)


def janus_readout(fused: torch.Tensor) -> torch.Tensor:
    """(B, 2L, D) fused rows -> (B, L, D) with out[p] = F[p-1] + B[p+1] (missing side = 0)."""
    seq_len = fused.shape[1] // 2
    forward_rows, backward_rows = fused[:, :seq_len], fused[:, seq_len:]
    return F.pad(forward_rows[:, :-1], (0, 0, 1, 0)) + F.pad(backward_rows[:, 1:], (0, 0, 0, 1))


def mlm_readout(fused: torch.Tensor) -> torch.Tensor:
    """(B, 2L, D) -> (B, L, D) with out[p] = F[p] + B[p]: the position itself included (its input
    is [MASK], a random base or unchanged, so it carries no reliable information)."""
    seq_len = fused.shape[1] // 2
    return fused[:, :seq_len] + fused[:, seq_len:]


@dataclass
class BackboneOutput:
    hidden_states: torch.Tensor  # (B, L, D) read-out states, final norm applied
    aux_loss: torch.Tensor  # MoE load-balancing loss: mean over MoE blocks, or (stream_pooled) forward + backward pooled losses; 0 without MoE


def _add(total: torch.Tensor | None, term: torch.Tensor | None) -> torch.Tensor | None:
    return term if total is None else total if term is None else total + term


class JanusModel(nn.Module):
    """Backbone: token ids (B, L) -> per-position states (B, L, D). janus: a state never saw its
    own base; mlm: it saw the (corrupted) input at its position; clm: it saw x[0..p] only."""

    def __init__(self, config: ModelConfig, ep_group=None, ep_group_name: str | None = None,
                 context: ContextParallel | None = None):
        super().__init__()
        config.validate()
        if context is not None and config.objective != "janus":
            raise ValueError(f"context parallel: model.objective={config.objective!r} is not supported with "
                             "parallel.cp_size > 1 (only janus is); use cp_size 1")
        self.config = config
        self.context = context  # None: the whole sequence on this rank
        self.kernels = KernelSlot(config.kernels, config.scan_chunk, config.fusion_query_block, config.fusion_kernel)
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.embedding.weight, std=config.initializer_range)
        self.embedding.weight._no_weight_decay = True
        self.layers = nn.ModuleList(JanusLayer(config, i, self.kernels, ep_group, ep_group_name, context)
                                    for i in range(config.n_layers))
        self.fusion = FusionBlock(config, self.kernels, context) if config.objective != "clm" else None
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        streams = 1 if config.objective == "clm" else 2
        self.num_moe_blocks = streams * sum(config.is_expert_layer(i) for i in range(config.n_layers))

    def moe_layers(self) -> list[MoEFeedForward]:
        return [m for m in self.modules() if isinstance(m, MoEFeedForward)]

    def forward(self, input_ids: torch.Tensor) -> BackboneOutput:
        e = self.embedding(input_ids)  # (B, L, D)
        objective = self.config.objective
        h_f, h_b = e, None if objective == "clm" else e.flip(1)
        aux = e.new_zeros((), dtype=torch.float32)
        pooled = [None, None]  # stream_pooled: router statistics summed over each stream's MoE layers
        for layer in self.layers:
            h_f, h_b, aux_f, aux_b = layer(h_f, h_b)  # checkpoints its streams under "layer"
            if self.config.aux_loss_pooling == "stream_pooled":
                pooled = [_add(pooled[0], aux_f), _add(pooled[1], aux_b)]
            else:
                aux = aux + (aux_f if aux_b is None else aux_f + aux_b)
        if objective == "clm":
            hidden = self.norm_f(h_f)  # (B, L, D), state p saw x[0..p]
        else:
            fused = self.fusion(torch.cat([h_f, h_b.flip(1)], dim=1))  # (B, 2L, D)
            if self.context is not None:
                hidden = self.norm_f(janus_readout_across_slices(fused, self.context))
            else:
                readout = janus_readout if objective == "janus" else mlm_readout
                hidden = self.norm_f(readout(fused))  # (B, L, D)
        if self.config.aux_loss_pooling == "stream_pooled":  # official: LB(forward) + LB(backward)
            c = self.config
            for stats in pooled:
                if stats is not None:
                    stats = stats if self.context is None else self.context.sum(stats)  # the whole sequence's
                    aux = aux + pooled_load_balancing_loss(stats, c.top_k, c.num_experts)
            return BackboneOutput(hidden, aux)
        return BackboneOutput(hidden, aux / max(self.num_moe_blocks, 1))


@dataclass
class JanusOutput:
    logits: torch.Tensor | None  # (B, L, vocab), row p predicts x[p] (clm: x[p+1]); None when the loss was chunked
    loss: torch.Tensor | None = None  # ce_loss + router_aux_loss_coef * aux_loss
    ce_loss: torch.Tensor | None = None  # mean CE over the objective's A/C/G/T targets (weighted by loss_weight)
    aux_loss: torch.Tensor | None = None  # MoE load-balancing loss (mean over MoE blocks)


class JanusForPretraining(nn.Module):
    """Backbone + optional MLP + LM head, trained with CE at the objective's A/C/G/T targets.

    mask_seed (the run's train.seed) keys the mlm corruption; it is not a weight.
    """

    def __init__(self, config: ModelConfig, ep_group=None, ep_group_name: str | None = None, mask_seed: int = 0,
                 cp_group=None):
        super().__init__()
        self.config = config
        self.mask_seed = mask_seed
        # cp_group: the context-parallel group; every rank of it then gets its slice of each sample
        # (ContextParallel.split) and the loss and logits are those of the whole sequence's slice
        self.context = None if cp_group is None or dist.get_world_size(cp_group) == 1 else ContextParallel(cp_group)
        self.backbone = JanusModel(config, ep_group, ep_group_name, self.context)
        std = config.initializer_range
        self.mlp = final_mlp(config) if config.final_mlp else None
        self.lm_head = init_linear(config.d_model, config.vocab_size, std)
        if config.init == "janusdna":
            janusdna_init_(self, std)

    def moe_layers(self) -> list[MoEFeedForward]:
        return self.backbone.moe_layers()

    def parameter_counts(self) -> tuple[int, int]:
        """(total, activated per token): a token uses top_k of num_experts experts per MoE layer."""
        total = sum(p.numel() for p in self.parameters())
        experts = sum(p.numel() for n, p in self.named_parameters() if ".experts." in n)
        num_experts = max(self.config.num_experts, 1)
        return total, total - experts + experts * self.config.top_k // num_experts

    def local_slice(self, t: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) whole samples -> the positions this rank holds: all of them, or under context
        parallelism its (B, L / cp_size, ...) slice (the one place a batch is split)."""
        return t if self.context is None else self.context.split(t)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, l, D) -> (B, l, vocab)
        if self.mlp is not None:
            hidden = hidden + self.mlp(hidden)
        return self.lm_head(hidden)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                loss_weight: torch.Tensor | None = None) -> JanusOutput:
        """Without labels: logits of the given ids, nothing corrupted. With labels: the objective's
        loss; under mlm the inputs are corrupted here, keyed by (mask_seed, sample)."""
        objective = self.config.objective
        if labels is not None and objective == "mlm":
            c = self.config
            corrupted = mlm_corrupt(input_ids, self.mask_seed, c.mlm_probability, c.mlm_mask_fraction,
                                    c.mlm_random_fraction)
            input_ids = corrupted.input_ids
            chosen = corrupted.selected.float()  # (B, L)
            loss_weight = chosen if loss_weight is None else loss_weight * chosen
        elif labels is not None and objective == "clm":
            labels, loss_weight = next_base_targets(labels, loss_weight)
        backbone = self.backbone(input_ids)
        if labels is None:
            return JanusOutput(logits=self.head(backbone.hidden_states), aux_loss=backbone.aux_loss)
        logits, ce = janus_loss(self.head, backbone.hidden_states, labels, loss_weight, self.config.loss_chunk,
                                self.config.loss_targets, self.context)
        loss = ce + self.config.router_aux_loss_coef * backbone.aux_loss
        return JanusOutput(logits=logits, loss=loss, ce_loss=ce, aux_loss=backbone.aux_loss)
