"""Dropless top-k mixture of experts with sort-based dispatch, ready for expert parallelism.

Tokens are routed by a softmax router to top_k experts (Jamba/JanusDNA routing: the top-k
softmax probabilities weight the expert outputs, no renormalisation). Dispatch sorts the
(token, expert) assignments by expert id and runs each expert on its contiguous slice: memory
O(tokens x top_k x D), never a tokens x experts x capacity tensor, and no token is dropped.

Parameter names carry GLOBAL expert ids (`experts.<id>.gate_proj.weight`): sharding experts over
an expert-parallel group changes which ids a rank holds, never a name. All experts are created
(and then the non-local ones dropped) so the initial values do not depend on ep_size.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from janus_pretrain.model.expert_parallel import ExpertParallelDispatch
from janus_pretrain.model.layers import SwiGLU, init_linear


def load_balancing_loss(probs: torch.Tensor, expert_index: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch/Mixtral auxiliary loss: num_experts * sum_e f_e * P_e, summed over the k choices.

    probs (T, E) router softmax; expert_index (T, k). Equals top_k at perfectly uniform routing.
    """
    # (k, E) fraction of tokens whose j-th choice is e; counted by scatter, not by a (T, k, E)
    # one-hot (384 bytes per token, 0.4 GB per stream at 1 Mbp)
    counts = torch.zeros(expert_index.shape[1], num_experts, device=probs.device)
    counts.scatter_add_(1, expert_index.t(), torch.ones(expert_index.t().shape, device=probs.device))
    tokens_per_expert = counts / max(expert_index.shape[0], 1)
    return num_experts * (tokens_per_expert * probs.float().mean(0)).sum()


def router_statistics(probs: torch.Tensor, expert_index: torch.Tensor, num_experts: int) -> torch.Tensor:
    """What load_balancing_loss needs, as sums that add up across layers: one fp32 vector
    [choice counts (k * E), summed router probabilities (E), token count (1)]; differentiable
    through the probabilities (model.aux_loss_pooling: stream_pooled)."""
    counts = torch.zeros(expert_index.shape[1], num_experts, device=probs.device)
    counts.scatter_add_(1, expert_index.t(), torch.ones(expert_index.t().shape, device=probs.device))
    tokens = torch.full((1,), float(expert_index.shape[0]), device=probs.device)
    return torch.cat([counts.flatten(), probs.float().sum(0), tokens])


def pooled_load_balancing_loss(stats: torch.Tensor, top_k: int, num_experts: int) -> torch.Tensor:
    """load_balancing_loss over every token that `stats` (a sum of router_statistics) counts: the
    official JanusDNA loss concatenates a stream's router logits over its MoE layers first."""
    tokens = stats[-1].clamp(min=1.0)
    counts = stats[:top_k * num_experts].view(top_k, num_experts) / tokens  # (k, E)
    probs = stats[top_k * num_experts:-1] / tokens  # (E,)
    return num_experts * (counts * probs).sum()


class MoEFeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, num_experts: int, top_k: int, std: float,
                 ep_group=None, ep_group_name: str | None = None, layer_name: str = "moe",
                 recompute: bool = False, chunk: int = 0, pooled_aux: bool = False, context=None):
        super().__init__()
        self.context = context  # context parallel: the loss balances the whole sequence's routing
        ep_size = dist.get_world_size(ep_group) if ep_group is not None else 1
        ep_rank = dist.get_rank(ep_group) if ep_group is not None else 0
        if num_experts % ep_size:
            raise ValueError(f"num_experts={num_experts} is not divisible by the expert-parallel size {ep_size}")
        self.num_experts, self.top_k, self.layer_name = num_experts, top_k, layer_name
        self.pooled_aux = pooled_aux  # return router statistics for the caller to pool, not this layer's loss
        self.num_local = num_experts // ep_size
        self.first_local = ep_rank * self.num_local
        self.router = init_linear(d_model, num_experts, std)
        every_expert = [SwiGLU(d_model, hidden, std, recompute, chunk) for _ in range(num_experts)]  # same RNG use for any ep_size
        self.experts = nn.ModuleDict({str(e): every_expert[e]
                                      for e in range(self.first_local, self.first_local + self.num_local)})
        for param in self.experts.parameters():  # DeepSpeed's marker for expert parameters
            param.allreduce = False
            param.group_name = ep_group_name or f"ep_size_{ep_size}"
        self.dispatch = ExpertParallelDispatch(ep_group, num_experts) if ep_size > 1 else None
        self.register_buffer("expert_counts", torch.zeros(num_experts, dtype=torch.long), persistent=False)

    def _run_local_experts(self, rows: torch.Tensor, counts: list[int]) -> torch.Tensor:
        # every local expert runs, even on zero rows, so each expert parameter gets a gradient
        # (zeros when unused) every step, as ZeRO's gradient partitioning expects
        return torch.cat([self.experts[str(self.first_local + i)](chunk) for i, chunk in enumerate(rows.split(counts))])

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) -> (output (B, L, D), aux loss scalar, or router_statistics when pooled_aux)."""
        shape = hidden.shape
        tokens = hidden.reshape(-1, shape[-1])  # (T, D)
        probs = torch.softmax(self.router(tokens).float(), dim=-1)  # (T, E)
        weights, expert_index = probs.topk(self.top_k, dim=-1)  # (T, k)
        flat_expert = expert_index.flatten()  # (T*k,)
        order = torch.argsort(flat_expert, stable=True)
        counts = torch.bincount(flat_expert, minlength=self.num_experts)  # (E,)
        self.expert_counts = counts.detach()
        rows = tokens[order // self.top_k]  # (T*k, D), grouped by expert
        if self.dispatch is None:
            expert_out = self._run_local_experts(rows, counts.tolist())
        else:
            local_rows, local_counts, state = self.dispatch.send(rows, counts)
            expert_out = self.dispatch.receive(self._run_local_experts(local_rows, local_counts.tolist()), state)
        weighted = expert_out * weights.flatten()[order].unsqueeze(-1).to(expert_out.dtype)
        out = torch.zeros_like(tokens).index_add_(0, order // self.top_k, weighted.to(tokens.dtype))
        if self.pooled_aux:
            return out.view(shape), router_statistics(probs, expert_index, self.num_experts)
        if self.context is not None:  # the statistics are sums: summed over the slices, then the loss
            stats = self.context.sum(router_statistics(probs, expert_index, self.num_experts))
            return out.view(shape), pooled_load_balancing_loss(stats, self.top_k, self.num_experts)
        return out.view(shape), load_balancing_loss(probs, expert_index, self.num_experts)
