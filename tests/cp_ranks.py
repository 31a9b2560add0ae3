"""CPU ranks (gloo, one process each) for the context-parallel model tests (tests/test_context_parallel.py).

run_ranks(size, job, **kwargs) spawns `size` processes; each builds the same model with the group
as its CP group, runs job(model, context, **kwargs) and rank 0's return value comes back.
"""
from __future__ import annotations

import os
import pickle
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from janus_pretrain.engine.distributed import free_port
from janus_pretrain.model import JanusForPretraining
from janus_pretrain.model.context_parallel import ContextParallel


def _rank_main(rank: int, size: int, port: int, config, job, kwargs, result_path: str):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    try:
        torch.manual_seed(0)
        model = JanusForPretraining(config, cp_group=dist.group.WORLD)
        result = job(model, ContextParallel(dist.group.WORLD), **kwargs)
        if rank == 0:
            with open(result_path, "wb") as f:
                pickle.dump(result, f)
    finally:
        dist.destroy_process_group()


def run_ranks(size: int, config, job, **kwargs):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.pkl")
        mp.spawn(_rank_main, args=(size, free_port(), config, job, kwargs, path), nprocs=size)
        with open(path, "rb") as f:
            return pickle.load(f)


def whole_sequence(context: ContextParallel, local: torch.Tensor) -> torch.Tensor:
    """(B, l, ...) slices of every rank -> (B, L, ...) in position order."""
    gathered = [torch.empty_like(local) for _ in range(context.size)]
    dist.all_gather(gathered, local.contiguous(), group=context.group)
    return torch.cat(gathered, dim=1)


def summed_gradients(model, context: ContextParallel) -> dict[str, torch.Tensor]:
    """The whole sequence's parameter gradients: each rank's, summed over the CP group."""
    grads = {}
    for name, param in model.named_parameters():
        # summed in fp32 (a bf16 model's gradients would round in the sum)
        grad = param.grad.float().clone() if param.grad is not None else torch.zeros_like(param, dtype=torch.float32)
        dist.all_reduce(grad, group=context.group)
        grads[name] = grad
    return grads


def forward_backward(model, context: ContextParallel, ids: torch.Tensor):
    """Rank job: loss on this rank's slice of ids, backward; the whole logits, loss and gradients."""
    out = model(context.split(ids), labels=context.split(ids))
    out.loss.backward()
    with torch.no_grad():
        logits = model(context.split(ids)).logits
    return {"logits": whole_sequence(context, logits), "loss": out.loss.detach(),
            "aux": out.aux_loss.detach(), "grads": summed_gradients(model, context)}


def forward_backward_with_kernels(model, context: ContextParallel, ids: torch.Tensor, kernels: str, dtype):
    """forward_backward with one of kernel_shims.SHIM_SETS (the CUDA glue through its shims) in dtype."""
    from kernel_shims import SHIM_SETS

    model.backbone.kernels._kernels["cpu"] = SHIM_SETS[kernels]()
    return forward_backward(model.to(dtype), context, ids)


def logits_after_changes(model, context: ContextParallel, ids: torch.Tensor, positions: list[int]):
    """Rank job: the whole logits of ids and of ids with the base at each position changed."""
    model.eval()
    results = {}
    with torch.no_grad():
        for p in [None, *positions]:
            x = ids.clone()
            if p is not None:
                x[:, p] = (ids[:, p] - 7 + 1) % 4 + 7
            results[p] = whole_sequence(context, model(context.split(x)).logits)
    return results
