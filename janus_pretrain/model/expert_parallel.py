"""Token exchange between expert-parallel ranks: differentiable all-to-all with uneven splits.

Works on gloo (CPU) and NCCL. The backward pass is the same exchange with the splits swapped.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = rows.new_empty((sum(out_splits), *rows.shape[1:]))
        dist.all_to_all_single(out, rows.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out_splits, in_splits = ctx.splits
        grad_in = grad.new_empty((sum(in_splits), *grad.shape[1:]))
        dist.all_to_all_single(grad_in, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return grad_in, None, None, None


def all_to_all(rows: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    """Send rows[sum(in_splits[:r]) : ...] to rank r of `group`; receive out_splits[r] rows from r."""
    return _AllToAll.apply(rows, out_splits, in_splits, group)


def exchange_counts(counts: torch.Tensor, group) -> torch.Tensor:
    """counts (ep_size, E_local): tokens this rank sends to each rank's local experts.

    Returns (ep_size, E_local): tokens each source rank sends to this rank's local experts.
    """
    received = torch.empty_like(counts)
    dist.all_to_all_single(received, counts.contiguous(), group=group)
    return received


class ExpertParallelDispatch:
    """Move expert-sorted rows to the ranks owning their experts and back.

    Rows arrive sorted by global expert id, so they are already grouped by destination rank
    (rank r owns experts [r * E_local, (r + 1) * E_local)).
    """

    def __init__(self, group, num_experts: int):
        self.group = group
        self.ep_size = dist.get_world_size(group)
        self.num_local = num_experts // self.ep_size

    def send(self, rows: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """rows (T*k, D) sorted by expert; counts (E,). Returns rows grouped by local expert,
        counts per local expert (E_local,) and the state that `receive` needs."""
        send_counts = counts.view(self.ep_size, self.num_local)
        recv_counts = exchange_counts(send_counts, self.group)  # (ep_size, E_local)
        in_splits = send_counts.sum(1).tolist()
        out_splits = recv_counts.sum(1).tolist()
        arrived = all_to_all(rows, out_splits, in_splits, self.group)  # grouped by (source, expert)
        local_expert = torch.repeat_interleave(
            torch.arange(self.num_local, device=rows.device).repeat(self.ep_size), recv_counts.flatten())
        order = torch.argsort(local_expert, stable=True)
        state = {"inverse": torch.argsort(order), "in_splits": in_splits, "out_splits": out_splits}
        return arrived[order], recv_counts.sum(0), state

    def receive(self, rows: torch.Tensor, state: dict) -> torch.Tensor:
        """Inverse of `send` for the expert outputs: back to the original sorted order."""
        return all_to_all(rows[state["inverse"]], state["in_splits"], state["out_splits"], self.group)
