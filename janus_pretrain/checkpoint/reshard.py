"""Resume a ZeRO-1/2 (+ expert parallel) checkpoint on another layout: world size, ep_size, stage.

DeepSpeed can only load its ZeRO partitions onto the layout that wrote them (its universal
checkpoints do not cover our MoE groups), so a layout change is done here, from the same files
the converter reads (layout in checkpoint/convert.py's docstring):

  every rank file    small: each source rank's ZeRO layout (which parameters, in which order,
                     make up each flat group; which partition of it the rank held), RNG, data state
  zero files         fp32 master partition and AdamW moments of each group: a target rank opens
                     only those whose partitions overlap the parameters of its own partitions,
                     memory-mapped, and reads only the slices it needs
  model states       the training-dtype dense weights (every target rank needs all of them)
  expert files       the training-dtype experts, one file per source ep rank: a target rank reads
                     the files holding its own global expert ids

Parameter names carry global expert ids (model/moe.py), so a parameter means the same on every
layout. After filling its partitions a rank checks them against the training-dtype weights it
loaded (master.to(dtype) must equal them), so a misread layout stops the resume with an error
instead of training on scrambled weights. Nothing is written into the source checkpoint.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from janus_pretrain import deepspeed_internals as ds
from janus_pretrain.checkpoint.integrity import IntegrityError, check_pickle_safe, load_ours
from janus_pretrain.checkpoint.layout import MODEL_STATES, CheckpointError, experts_file, rank_file

MOMENTS = ("exp_avg", "exp_avg_sq")  # torch AdamW's per-parameter state besides 'step'
EXPERT_ID = re.compile(r"\.experts\.(\d+)\.")  # global expert id in a parameter name (model/moe.py)


@dataclass(frozen=True)
class Place:
    """Where one parameter sits in a source checkpoint's flat optimizer groups."""
    group: tuple  # (group index, kind, ep_rank or None): one flat vector per reduce group
    offset: int  # start in the group's flat vector (alignment padding included)
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())


class SourceCheckpoint:
    """Named fp32 master weights and AdamW moments of a ZeRO-1/2 checkpoint, read lazily."""

    def __init__(self, folder: Path, ranks: dict[int, dict], trust: bool = False):
        """ranks: every source rank's file (checkpoint/training_state.py's rank state)."""
        self.folder, self.ranks, self.trust = folder, ranks, trust
        self._open: dict[str, dict] = {}  # zero file name -> its loaded (memory-mapped) optimizer state
        self.places: dict[str, Place] = {}
        self.partitions: dict[tuple, dict[int, int]] = {}  # group -> partition id -> source rank
        self.partition_numel: dict[tuple, int] = {}
        for rank, info in sorted(ranks.items()):
            if not info.get("zero_layout"):
                raise CheckpointError(f"{folder}: rank {rank} has no ZeRO partition layout (ZeRO stage 0 or an old "
                                      f"checkpoint); it can only be resumed on the layout that wrote it")
            for i, group in enumerate(info["zero_layout"]):
                key = (i, group["kind"], info["ep_rank"] if group["kind"] == "moe" else None)
                self.partitions.setdefault(key, {}).setdefault(group["partition_id"], rank)
                if key not in self.partition_numel:
                    self.partition_numel[key] = group["partition_numel"]
                    self._place(key, group)

    def _place(self, key: tuple, group: dict) -> None:
        offset = 0
        for (name, shape), pad in zip(group["params"], group["param_paddings"]):
            if name in self.places:
                raise CheckpointError(f"{self.folder}: parameter {name} appears in two optimizer groups")
            self.places[name] = Place(key, offset, tuple(shape))
            offset += self.places[name].numel + int(pad)

    def _zero_state(self, rank: int) -> dict:
        name = self.ranks[rank]["zero_file"]
        if name not in self._open:
            path = self.folder / name
            check_pickle_safe(path, trust=self.trust)
            self._open[name] = ds.load_zero_file(path, mmap=True)
        return self._open[name]

    def _group_tensors(self, rank: int, index: int) -> dict[str, torch.Tensor]:
        """fp32 master partition and AdamW moments of group `index` on source rank `rank`."""
        state = self._zero_state(rank)
        out = {"fp32": ds.saved_fp32_partitions(state)[index]}
        moments = ds.saved_moments(state, index)
        out.update({k: moments[k] for k in MOMENTS if k in moments})
        return out

    @property
    def opened(self) -> list[str]:
        """The zero files read so far."""
        return sorted(self._open)

    def step(self) -> torch.Tensor | None:
        """AdamW's step count (the same in every group; None before the first update), from a
        zero file already read when there is one."""
        rank = next((r for r, info in self.ranks.items() if info["zero_file"] in self._open), min(self.ranks))
        return ds.saved_moments(self._zero_state(rank), 0).get("step")

    def read(self, name: str) -> dict[str, torch.Tensor]:
        """fp32 master weight and AdamW moments of one parameter (shape of the parameter)."""
        place = self.places.get(name)
        if place is None:
            raise CheckpointError(f"{self.folder}: no optimizer state for parameter {name}; the checkpoint holds "
                                  f"another model")
        size, owners = self.partition_numel[place.group], self.partitions[place.group]
        pieces: dict[str, list[torch.Tensor]] = {}
        start, end = place.offset, place.offset + place.numel
        for pid in range(start // size, (end - 1) // size + 1):
            if pid not in owners:
                raise CheckpointError(f"{self.folder}: partition {pid} of the group holding {name} is missing "
                                      f"(rank files missing)")
            lo, hi = max(start, pid * size) - pid * size, min(end, (pid + 1) * size) - pid * size
            for key, flat in self._group_tensors(owners[pid], place.group[0]).items():
                pieces.setdefault(key, []).append(flat[lo:hi])
        return {key: torch.cat(parts).view(place.shape).clone() for key, parts in pieces.items()}

    def full_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every parameter's master weight and moments (tests and tools; a rank never needs all)."""
        return {name: self.read(name) for name in self.places}


def training_weights(folder: Path, module: torch.nn.Module, experts_per_source_rank: int,
                     trust: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """The training-dtype weights of `module`'s parameters (dense ones from DeepSpeed's model
    states, experts from the files of the source ep ranks that hold this module's expert ids)
    and DeepSpeed's model states (counters, lr schedule)."""
    check_pickle_safe(folder / MODEL_STATES, trust=trust)
    model_states = torch.load(folder / MODEL_STATES, map_location="cpu", weights_only=False, mmap=True)
    experts = set(ds.expert_param_names(module))
    state = {k: v for k, v in model_states[ds.MODULE].items() if k not in experts and ".experts." not in k}
    wanted: dict[int, list[str]] = {}
    for name in experts:  # ...experts.<global id>...: held by source ep rank id // experts per rank
        expert = int(EXPERT_ID.search(name).group(1))
        wanted.setdefault(expert // experts_per_source_rank, []).append(name)
    for source_ep, names in sorted(wanted.items()):
        held = load_ours(folder / experts_file(source_ep))
        missing = [n for n in names if n not in held]
        if missing:
            raise CheckpointError(f"{folder / experts_file(source_ep)} lacks {missing[:3]}")
        state.update({n: held[n] for n in names})
    return state, model_states


def apply_to_engine(engine, source: SourceCheckpoint, folder: Path, experts_per_source_rank: int,
                    trust: bool) -> None:
    """Load weights, fp32 master partitions, AdamW moments, lr schedule and DeepSpeed's counters
    from `source` into this rank's freshly built ZeRO-1/2 engine."""
    module, optimizer = engine.module, engine.optimizer
    if not ds.is_zero(optimizer):
        raise CheckpointError("resuming on another layout needs ZeRO stage 1 or 2 (parallel.zero_stage)")
    if ds.uses_round_robin(optimizer):
        raise CheckpointError("round_robin_gradients reorders ZeRO's flat groups; not supported when resharding")
    weights, model_states = training_weights(folder, module, experts_per_source_rank, trust)
    with torch.no_grad():
        module.load_state_dict(weights, strict=True)  # the bit16 params are views into ZeRO's flat buffers
    names = {id(p): n for n, p in module.named_parameters()}
    base = ds.inner_optimizer(optimizer)
    for i, params, paddings, pid, size, master, own in ds.local_partitions(optimizer):
        lo, hi = pid * size, (pid + 1) * size
        flat: dict[str, torch.Tensor] = {}  # fp32 master and moments of this rank's partition, padding zero
        offset = 0
        for param, pad in zip(params, paddings):
            n = param.numel()
            a, b = max(offset, lo), min(offset + n, hi)
            if a < b:
                for key, value in source.read(names[id(param)]).items():
                    dst = flat.setdefault(key, torch.zeros(size, dtype=torch.float32))
                    dst[a - lo:b - lo] = value.reshape(-1)[a - offset:b - offset]
            offset += n + pad
        master.data.copy_(flat.get("fp32", torch.zeros(size)).to(master.device))
        if not torch.equal(master.data.to(own.dtype), own.data):
            raise CheckpointError(f"{folder}: resharded master weights of optimizer group {i} disagree with the "
                                  f"saved training weights; the partition layout was misread, nothing trained")
        step = source.step()
        if step is not None and all(k in flat for k in MOMENTS):
            base.state[master] = {"step": step.clone(), **{k: flat[k].to(master.device) for k in MOMENTS}}
    engine.lr_scheduler.load_state_dict(model_states[ds.LR_SCHEDULER])
    for group, lr in zip(base.param_groups, engine.lr_scheduler.get_last_lr()):
        group["lr"] = lr
    ds.set_engine_counters(engine, model_states)


def check_zero_file(folder: Path, rank: int, info: dict, meta) -> dict:
    """`info` (rank_<R>.pt) if its 'zero_file' is the name DeepSpeed gives R's partition (meta: the
    tag's CheckpointMeta); another name means the file was edited: IntegrityError."""
    expected = meta.zero_file(rank)
    if info.get("zero_file") != expected:
        raise IntegrityError(f"{folder / rank_file(rank)}: records zero_file {info.get('zero_file')!r}, but DeepSpeed "
                             f"reads {expected!r} for rank {rank} of this checkpoint: the file was edited; do not "
                             f"use this checkpoint")
    return info


def rank_state(folder: Path, rank: int, meta) -> dict:
    """rank_<R>.pt, loaded with weights_only (runs nothing), its zero_file checked."""
    return check_zero_file(folder, rank, load_ours(folder / rank_file(rank)), meta)


def read_rank_files(folder: Path, meta) -> dict[int, dict]:
    """Every source rank's state (rank_state), by rank."""
    return {rank: rank_state(folder, rank, meta) for rank in range(meta.layout.world_size)}
