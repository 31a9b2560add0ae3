"""The on-disk layout of `checkpoint.dir`: every file name is a constant here, used by the trainer
(checkpoint/training_state.py) and the converter (checkpoint/convert.py) alike.

DeepSpeed's files plus ours, made visible through an atomic `latest` pointer:

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
      meta.json                     ours: what the checkpoint is (run config, counters, layout,
                                    digests): its keys are checkpoint/meta.py's CheckpointMeta
      COMPLETE                      written by rank 0 after all ranks wrote their files

To rebuild fp32 named weights: for each group, concatenate the 'single_partition_of_fp32_groups'
entry of the ranks with partition_id 0..partition_count-1 of one reduce group (for moe groups:
the ranks sharing one ep_rank; each ep_rank gives its own experts), and split the flat vector in
'params' order by the shapes. DeepSpeed saves the partitions with the padding already stripped,
so the concatenation has exactly sum(numel) elements ('padding' is informational).
tests/test_engine_resume.py::test_zero_partitions_and_layout_rebuild_every_named_weight does
exactly this and compares with the live weights (checkpoint/convert.py does it for exports).

Crash safety: DeepSpeed writes its files straight to their final names, so a save is only made
visible by `latest` after COMPLETE exists. A kill -9 during a save leaves an incomplete tag
directory that `latest` never points to; the next save of that tag discards it first. keep-last-K never
deletes the tag `latest` points to nor the one this run resumed from.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from janus_pretrain.atomic_io import atomic_write_text

TAG_PATTERN = re.compile(r"^step_(\d{8,})$")
LATEST = "latest"  # pointer file: tag of the newest complete checkpoint
COMPLETE = "COMPLETE"  # marker: every rank's files of this tag are on disk
META = "meta.json"  # the checkpoint's record (checkpoint/meta.py)
MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's module state (rank 0)


def rank_file(rank: int) -> str:
    """Our per-rank state: data stream, RNG, ZeRO partition layout."""
    return f"rank_{rank}.pt"


def experts_file(ep_rank: int) -> str:
    """The expert weights one expert-parallel rank holds (global expert ids in the names)."""
    return f"experts_ep{ep_rank}.pt"


EXPERTS_GLOB = "experts_ep*.pt"


def tag_for_step(step: int) -> str:
    return f"step_{step:08d}"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class CheckpointDir:
    """File-level bookkeeping of checkpoint.dir: which tags exist, which are complete, `latest`."""

    def __init__(self, directory: str | Path, keep: int = 1):
        self.root = Path(directory)
        self.keep = keep

    @classmethod
    def find(cls, path: str | Path) -> "CheckpointDir":
        """A checkpoint.dir given either itself or the run directory holding checkpoints/."""
        path = Path(path)
        nested = path / "checkpoints"
        if nested.is_dir() and not (path / LATEST).exists() and not any(TAG_PATTERN.match(p.name) for p in path.iterdir()):
            return cls(nested)
        return cls(path)

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

    def complete_tags(self) -> list[str]:
        return [t for t in self.tags() if self.is_complete(t)]

    def latest(self) -> str | None:
        """The tag to resume from: `latest` if it names a complete checkpoint, else the newest
        complete one (a crash between COMPLETE and the pointer update, or a damaged pointer:
        unreadable, not text, not a tag), else None."""
        pointer = self.root / LATEST
        try:
            tag = pointer.read_bytes().decode("ascii").strip() if pointer.is_file() else ""
        except (OSError, UnicodeDecodeError):  # only set_latest writes it: anything else is damage
            tag = ""
        if TAG_PATTERN.match(tag) and self.is_complete(tag):
            return tag
        complete = self.complete_tags()
        return complete[-1] if complete else None

    def resolve(self, tag: str = "latest") -> Path:
        """The folder of a complete checkpoint: 'latest' (as latest()) or an explicit tag."""
        if tag == "latest":
            found = self.latest()
            if found is None:
                raise CheckpointError(f"{self.root}: no complete checkpoint (tags here: {self.tags() or 'none'})")
            tag = found
        folder = self.path(tag)
        if not folder.is_dir():
            raise CheckpointError(f"checkpoint tag {tag!r} not found under {self.root} "
                                  f"(complete ones: {', '.join(self.complete_tags()) or 'none'})")
        if not self.is_complete(tag):
            raise CheckpointError(f"{folder} is incomplete (no {COMPLETE} marker: the save was interrupted); "
                                  f"use an earlier tag (complete ones: {', '.join(self.complete_tags()) or 'none'})")
        return folder

    def discard(self, tag: str) -> None:
        """Remove whatever a tag directory holds before saving that tag again: leftovers of a
        save that died half-way, or another run's checkpoint of the same step."""
        path = self.path(tag)
        if path.exists():
            shutil.rmtree(path)

    def mark_complete(self, tag: str, meta_json: str) -> None:
        """Write meta.json (checkpoint/meta.py's CheckpointMeta.to_json) and then COMPLETE."""
        atomic_write_text(self.path(tag) / META, meta_json, durable=True)
        atomic_write_text(self.path(tag) / COMPLETE, tag + "\n", durable=True)

    def set_latest(self, tag: str) -> None:
        if not self.is_complete(tag):
            raise RuntimeError(f"refusing to point {self.root / LATEST} at incomplete checkpoint {tag}")
        atomic_write_text(self.root / LATEST, tag + "\n", durable=True)

    def room_for_another(self, tag: str) -> str | None:
        """After `tag` was saved: why the next save will not fit, or None. A save writes a whole
        new checkpoint before the oldest is pruned, so the file system holding checkpoint.dir needs
        at least the size of `tag` free (10% margin)."""
        size = sum(f.stat().st_size for f in self.path(tag).rglob("*") if f.is_file())
        free = shutil.disk_usage(self.root).free
        if free >= 1.1 * size:
            return None
        return (f"only {_readable(free)} free where checkpoints are written ({self.root}), less than one more "
                f"checkpoint ({_readable(size)} for {tag}): the next save will fail and stop the run; free space "
                f"or move checkpoint.dir before then (the checkpoints so far stay intact either way)")

    def prune(self, protect: set[str]) -> list[str]:
        """Delete all but the newest `keep` complete checkpoints; never a protected tag or the one
        `latest` names. Incomplete directories older than the newest complete one are dead saves
        and go too. Returns the deleted tags."""
        keep_tags = set(protect)
        latest = self.latest()
        if latest:
            keep_tags.add(latest)
        complete = self.complete_tags()
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


def _readable(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
