"""Save and restore the whole training state of a DeepSpeed run (the trainer only calls this).

What one save holds (file names: checkpoint/layout.py): DeepSpeed's engine state (module,
optimizer partitions, lr scheduler), every expert-parallel rank's experts, and per rank the
state of the components that must survive a restart, each given as a state_dict(): the data
stream, the RNGs and the ZeRO partition layout the converter needs. meta.json describes the run
(config, counters, layout) and is written last, with COMPLETE, by rank 0.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from janus_pretrain.atomic_io import temporary_path
from janus_pretrain.checkpoint.layout import CheckpointDir, CheckpointError, experts_file, rank_file, tag_for_step

# meta.json keys that must equal the resuming run's (resharding is not supported)
LAYOUT_KEYS = ("world_size", "ep_size", "zero_stage")


def atomic_torch_save(obj, path: Path) -> None:
    tmp = temporary_path(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
        path = ckpt_dir / experts_file(ep_rank)
        if own:
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint {ckpt_dir} has no {path.name} for expert-parallel rank {ep_rank}")
            state.update(torch.load(path, map_location="cpu", weights_only=True))
        dst.load_state_dict(state, strict=True)
    return load


@dataclass
class Restored:
    """What a resume hands back to the trainer besides the engine state it loaded."""
    tag: str
    folder: Path
    meta: dict  # meta.json of the checkpoint
    components: dict  # this rank's component states, by the names given to save()


class TrainingCheckpointer:
    """One rank's view of checkpoint.dir: save() and load() the full training state.

    ctx: the run's DistContext (rank, ep_rank, edp_rank, is_main); message: rank-0 log line.
    Tags are tag_for_step(step); `latest` moves only after every rank's files are on disk.
    """

    def __init__(self, directory: str | Path, keep: int, ctx, message: Callable[[str], None] = print):
        self.dir = CheckpointDir(directory, keep)
        self.ctx = ctx
        self.message = message
        self.resumed_tag: str | None = None  # never pruned, never rewritten
        self.last_tag: str | None = None  # newest tag written or resumed from

    def save(self, engine, step: int, meta: dict, components: dict) -> str:
        """Write tag_for_step(step): engine state, experts, this rank's `components` (name ->
        state dict) and RNG; rank 0 then writes meta.json + COMPLETE, moves `latest`, prunes."""
        tag = tag_for_step(step)
        if tag == self.resumed_tag and self.dir.is_complete(tag):
            return tag  # nothing happened since we loaded it: never rewrite the checkpoint in use
        dist.barrier()
        if self.ctx.is_main:
            self.dir.discard(tag)  # a dead save or another run's tag: start clean
        dist.barrier()
        engine.save_checkpoint(str(self.dir.root), tag, client_state={"janus_meta": meta}, save_latest=False)
        folder = self.dir.path(tag)
        module = engine.module
        if self.ctx.edp_rank == 0:
            expert_names = set(expert_param_names(module))
            experts = {n: p.detach().cpu().clone() for n, p in module.named_parameters() if n in expert_names}
            if experts:
                atomic_torch_save(experts, folder / experts_file(self.ctx.ep_rank))
        zero_file = Path(engine._get_zero_ckpt_name(str(self.dir.root), tag)).name \
            if meta["zero_stage"] > 0 else None
        own = {**components, "rng": rng_state(), "rank": self.ctx.rank, "ep_rank": self.ctx.ep_rank,
               "edp_rank": self.ctx.edp_rank, "zero_file": zero_file, "zero_layout": zero_layout(engine, module)}
        atomic_torch_save(own, folder / rank_file(self.ctx.rank))
        dist.barrier()  # every rank's files are on disk
        if self.ctx.is_main:
            self.dir.mark_complete(tag, meta)
            self.dir.set_latest(tag)
            deleted = self.dir.prune(protect={t for t in (tag, self.resumed_tag) if t})
            self.message(f"checkpoint: saved {folder}" + (f" (removed {', '.join(deleted)})" if deleted else ""))
        dist.barrier()
        self.last_tag = tag
        return tag

    def choose(self, choice: str) -> str | None:
        """checkpoint.resume: auto = latest complete checkpoint if any; none; or a tag. Rank 0
        decides and every rank follows, so all resume the same tag."""
        tag = None
        if choice == "auto":
            tag = self.dir.latest()
        elif choice != "none":
            if not self.dir.is_complete(choice):
                raise CheckpointError(
                    f"--resume {choice}: no complete checkpoint {self.dir.path(choice)} "
                    f"(complete ones: {', '.join(self.dir.complete_tags()) or 'none'})")
            tag = choice
        shared = [tag]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]

    def load(self, engine, choice: str, layout: dict) -> Restored | None:
        """Restore the engine and RNG from the chosen checkpoint; None when starting fresh.
        layout: this run's world_size, ep_size and zero_stage, which must equal the checkpoint's."""
        tag = self.choose(choice)
        if tag is None:
            return None
        folder = self.dir.path(tag)
        meta = self.dir.read_meta(tag)
        for key in LAYOUT_KEYS:
            if meta[key] != layout[key]:
                raise CheckpointError(f"checkpoint {folder} was written with {key}={meta[key]}, this run has "
                                      f"{layout[key]}; resume with the same setting or start fresh with --resume none")
        engine.load_checkpoint(str(self.dir.root), tag, custom_load_fn=merge_expert_state(folder, self.ctx.ep_rank))
        own = torch.load(folder / rank_file(self.ctx.rank), map_location="cpu", weights_only=False)
        set_rng_state(own["rng"])
        self.resumed_tag = self.last_tag = tag
        return Restored(tag, folder, meta, own)
