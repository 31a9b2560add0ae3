"""Checkpoints: DeepSpeed's files plus ours, made visible through an atomic `latest` pointer.

Layout of `checkpoint.dir` (the export converter reads it; keep this docstring in sync):

    latest                          text: tag of the newest COMPLETE checkpoint; written to a
                                    temporary name and renamed, only after every rank finished
    step_00000100/                  one directory per save, tag = step_<8-digit optimizer step>
      mp_rank_00_model_states.pt    DeepSpeed (written by rank 0): 'module' = state_dict of rank 0's
                                    model (dense params and the experts EP rank 0 holds, in the
                                    training dtype), 'lr_scheduler', 'param_shapes',
                                    'num_experts', ..., plus our client state: 'janus_meta' (= meta.json)
      [bf16_]zero_pp_rank_<R>_mp_rank_00_optim_states.pt
                                    DeepSpeed, one per rank R: 'optimizer_state_dict' with
                                    'single_partition_of_fp32_groups' (this rank's fp32 master
                                    partition of each param group, padding stripped),
                                    'base_optimizer_state' (AdamW moments), 'group_paddings',
                                    'partition_count'
      experts_ep<E>.pt              ours, one per expert-parallel rank E (written by its
                                    expert-data-parallel rank 0): {param name: tensor} of the
                                    experts EP rank E holds; names carry GLOBAL expert ids
      rank_<R>.pt                   ours, one per rank R: 'data' (this rank's train-stream
                                    state), 'rng' (torch, numpy, python, cuda), 'ep_rank',
                                    'edp_rank', 'zero_file' (name of R's DeepSpeed partition file)
                                    and 'zero_layout': per optimizer param group, in order:
                                    {'name', 'kind' ('dense' | 'moe'), 'decay_kind',
                                    'params': [[name, shape], ...] (flattening order),
                                    'partition_id' (R's index in the group's reduce group: the
                                    data-parallel world for dense, the expert-data-parallel group
                                    for moe), 'partition_count', 'partition_numel' (with padding),
                                    'padding' (zeros appended to the flat group before splitting)}
      meta.json                     ours: run config, step, tokens_seen, tokenizer version and
                                    vocabulary, world_size, ep_size, zero_stage, precision
      COMPLETE                      written by rank 0 after all ranks wrote their files

To rebuild fp32 named weights: for each group, concatenate the 'single_partition_of_fp32_groups'
entry of the ranks with partition_id 0..partition_count-1 of one reduce group (for moe groups:
the ranks sharing one ep_rank; each ep_rank gives its own experts), and split the flat vector in
'params' order by the shapes. DeepSpeed saves the partitions with the padding already stripped,
so the concatenation has exactly sum(numel) elements ('padding' is informational).
tests/test_engine_resume.py::test_zero_partitions_and_layout_rebuild_every_named_weight does
exactly this and compares with the live weights.

Crash safety: DeepSpeed writes its files straight to their final names, so a save is only made
visible by `latest` after COMPLETE exists. A kill -9 during a save leaves an incomplete tag
directory that `latest` never points to; the next save of that tag removes it. keep-last-K never
deletes the tag `latest` points to nor the one this run resumed from.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from janus_pretrain.atomic_io import atomic_write_text, temporary_path

TAG_PATTERN = re.compile(r"^step_(\d{8,})$")
COMPLETE = "COMPLETE"
LATEST = "latest"


def tag_for_step(step: int) -> str:
    return f"step_{step:08d}"


def atomic_torch_save(obj, path: Path) -> None:
    tmp = temporary_path(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


class CheckpointDir:
    """File-level bookkeeping of checkpoint.dir: which tags exist, which are complete, `latest`."""

    def __init__(self, directory: str | Path, keep: int):
        self.root = Path(directory)
        self.keep = keep

    def path(self, tag: str) -> Path:
        return self.root / tag

    def is_complete(self, tag: str) -> bool:
        return (self.root / tag / COMPLETE).is_file()

    def tags(self) -> list[str]:
        """Tag directories present (complete or not), oldest first."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and TAG_PATTERN.match(p.name)]
        return sorted(found, key=lambda t: int(TAG_PATTERN.match(t).group(1)))

    def latest(self) -> str | None:
        """The tag to resume from: `latest` if it names a complete checkpoint, else the newest
        complete one (a crash between COMPLETE and the pointer update), else None."""
        pointer = self.root / LATEST
        if pointer.is_file():
            tag = pointer.read_text().strip()
            if tag and self.is_complete(tag):
                return tag
        complete = [t for t in self.tags() if self.is_complete(t)]
        return complete[-1] if complete else None

    def remove_incomplete(self, tag: str) -> None:
        """Clear leftovers of a save that died half-way, before saving that tag again."""
        path = self.path(tag)
        if path.exists() and not self.is_complete(tag):
            shutil.rmtree(path)

    def mark_complete(self, tag: str, meta: dict) -> None:
        atomic_write_text(self.path(tag) / "meta.json", json.dumps(meta, indent=2, sort_keys=True, default=str),
                          durable=True)
        atomic_write_text(self.path(tag) / COMPLETE, tag + "\n", durable=True)

    def set_latest(self, tag: str) -> None:
        if not self.is_complete(tag):
            raise RuntimeError(f"refusing to point {self.root / LATEST} at incomplete checkpoint {tag}")
        atomic_write_text(self.root / LATEST, tag + "\n", durable=True)

    def prune(self, protect: set[str]) -> list[str]:
        """Delete all but the newest `keep` complete checkpoints; never a protected tag or the one
        `latest` names. Incomplete directories older than the newest complete one are dead saves
        and go too. Returns the deleted tags."""
        keep_tags = set(protect)
        latest = self.latest()
        if latest:
            keep_tags.add(latest)
        complete = [t for t in self.tags() if self.is_complete(t)]
        keep_tags.update(complete[-self.keep:])
        newest_complete = int(TAG_PATTERN.match(complete[-1]).group(1)) if complete else -1
        deleted = []
        for tag in self.tags():
            step = int(TAG_PATTERN.match(tag).group(1))
            if tag in keep_tags or (not self.is_complete(tag) and step > newest_complete):
                continue
            shutil.rmtree(self.path(tag), ignore_errors=True)
            deleted.append(tag)
        return deleted


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def expert_param_names(module: torch.nn.Module) -> list[str]:
    from deepspeed.moe.utils import is_moe_param

    return [name for name, p in module.named_parameters() if is_moe_param(p)]


def zero_layout(engine, module: torch.nn.Module) -> list[dict]:
    """Per optimizer param group: how ZeRO-1/2 flattened and partitioned it on this rank."""
    optimizer = engine.optimizer
    if not hasattr(optimizer, "bit16_groups"):  # ZeRO-0: plain optimizer, weights are in 'module'
        return []
    names = {id(p): n for n, p in module.named_parameters()}
    layout = []
    for i, params in enumerate(optimizer.bit16_groups):
        group = optimizer.optimizer.param_groups[i]
        layout.append({
            "name": group.get("name", str(i)),
            "kind": "moe" if group.get("moe", False) else "dense",
            "decay_kind": group.get("decay_kind", ""),
            "params": [[names[id(p)], list(p.shape)] for p in params],
            "partition_id": torch.distributed.get_rank(group=optimizer.real_dp_process_group[i]),
            "partition_count": int(optimizer.partition_count[i]),
            "partition_numel": int(optimizer.single_partition_of_fp32_groups[i].numel()),
            "padding": int(optimizer.groups_padding[i]),
        })
    return layout


def merge_expert_state(ckpt_dir: Path, ep_rank: int):
    """custom_load_fn for engine.load_checkpoint: DeepSpeed hands us rank 0's module state dict
    (rank 0's experts only); replace its expert entries by this EP rank's own expert file, then
    load strictly so a missing or extra tensor is an error, not silence."""
    def load(src: dict, dst: torch.nn.Module) -> None:
        own = set(expert_param_names(dst))
        state = {k: v for k, v in src.items() if k not in own and ".experts." not in k}
        experts_file = ckpt_dir / f"experts_ep{ep_rank}.pt"
        if own:
            if not experts_file.is_file():
                raise FileNotFoundError(f"checkpoint {ckpt_dir} has no {experts_file.name} for expert-parallel rank {ep_rank}")
            state.update(torch.load(experts_file, map_location="cpu", weights_only=True))
        dst.load_state_dict(state, strict=True)
    return load
