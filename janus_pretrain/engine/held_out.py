"""Validation: loss, bits per base and per-base accuracy per species on the held-out contigs.

The numbers mean the same for every model.objective: the cross-entropy of predicting base p,
read as model/base_prediction.py defines it (janus: both sides; clm: left context only; mlm:
each base masked once over a fixed comb of passes). bpc = loss / ln 2 (bits per base).

Ranks hold different numbers of validation batches, but with expert parallelism every forward is
a collective (all-to-all over the expert-parallel group). So ranks step in lock-step: each round
they agree whether anyone still has a batch, and a rank that ran out runs a zero-weight dummy
batch. Sums per species are all-reduced at the end. Under context parallelism every rank of a
group reads the same batch and scores its slice of it (JanusForPretraining.local_slice), so the
sums still count each position once.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from janus_pretrain.model.base_prediction import predict_bases
from janus_pretrain.tokenizer import A_ID, N_ID, T_ID


@torch.no_grad()
def held_out_metrics(module: torch.nn.Module, batches, species_names: list[str], device: torch.device,
             seq_len: int) -> dict[str, float]:
    """`batches` yields (species name, batch dict); returns {'valid/<species>/loss', '.../bpc',
    '.../accuracy'} and the same for 'all'.

    Accuracy: argmax over the four bases at every position whose target is a base with nonzero
    loss weight (N and padding are never targets, as in training) and that got a prediction
    (clm: not the first position of a window).
    """
    index = {name: i for i, name in enumerate(species_names)}
    sums = torch.zeros(len(species_names), 3, dtype=torch.float64, device=device)  # (S, [loss sum, correct, count])
    iterator = iter(batches)
    was_training = module.training
    module.eval()
    try:
        while True:
            item = next(iterator, None)
            flag = torch.tensor([0.0 if item is None else 1.0], device=device)  # NCCL needs CUDA tensors
            if dist.is_initialized():
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() == 0:
                break
            if item is None:  # keep the collectives of the expert all-to-all matched
                ids = module.local_slice(torch.full((1, seq_len), N_ID, dtype=torch.long, device=device))
                predict_bases(module, ids)  # as many forward passes as a real batch makes
                continue
            species, batch = item
            species_name = species if isinstance(species, str) else species_names[int(species)]
            ids = module.local_slice(batch["input_ids"]).to(device)
            weight = module.local_slice(batch["loss_weight"]).to(device)
            prediction = predict_bases(module, ids)  # logits only: the loss is computed here per position
            mask = (ids >= A_ID) & (ids <= T_ID) & (weight > 0) & prediction.predicted  # (B, L)
            logits = prediction.logits  # (B, L, V) fp32, row p predicts ids[p]
            loss = F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="none").view_as(ids)
            correct = (logits[..., A_ID:T_ID + 1].argmax(-1) + A_ID) == ids
            sums[index[species_name]] += torch.stack([(loss * mask).sum(), (correct & mask).sum(), mask.sum()]).double()
    finally:
        module.train(was_training)
    if dist.is_initialized():
        dist.all_reduce(sums)
    result = {}
    sums = sums.cpu()
    for name, (loss_sum, correct, count) in zip(species_names, sums.tolist()):
        if count > 0:
            result[f"valid/{name}/loss"] = loss_sum / count
            result[f"valid/{name}/bpc"] = loss_sum / count / math.log(2)
            result[f"valid/{name}/accuracy"] = correct / count
    total = sums.sum(0).tolist()
    if total[2] > 0:
        result["valid/all/loss"] = total[0] / total[2]
        result["valid/all/bpc"] = total[0] / total[2] / math.log(2)
        result["valid/all/accuracy"] = total[1] / total[2]
    return result
