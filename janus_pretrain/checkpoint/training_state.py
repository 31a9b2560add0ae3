"""Save and restore the whole training state of a DeepSpeed run (the trainer only calls this).

What one save holds (file names: checkpoint/layout.py): DeepSpeed's engine state (module,
optimizer partitions, lr scheduler), every expert-parallel rank's experts, and per rank the
state of the components that must survive a restart, each given as a state_dict(): the data
stream, the RNGs (rng.py) and the ZeRO partition layout the converter needs. meta.json describes
the checkpoint (checkpoint/meta.py: config, counters, layout, the sha256 of every file) and is
written last, with COMPLETE, by rank 0.

Trust (checkpoint/integrity.py): a save is refused when any parameter or optimizer state is not
finite; a resume verifies each rank's files against the recorded digests and scans every pickle
before DeepSpeed unpickles it, and with `resume: auto` falls back to the newest checkpoint that
verifies, saying which file was damaged.
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from janus_pretrain import deepspeed_internals as ds
from janus_pretrain import rng
from janus_pretrain.atomic_io import temporary_path
from janus_pretrain.checkpoint.integrity import (IntegrityError, check_pickle_safe, load_ours, nonfinite_names,
                                                 training_tensors, verify_digests)
from janus_pretrain.checkpoint.layout import (MODEL_STATES, CheckpointDir, CheckpointError, experts_file, rank_file,
                                              tag_for_step)
from janus_pretrain.checkpoint.meta import CheckpointMeta, Layout, read_meta
from janus_pretrain.checkpoint.reshard import SourceCheckpoint, apply_to_engine, rank_state, read_rank_files
from janus_pretrain.digests import file_digest

def atomic_torch_save(obj, path: Path) -> None:
    tmp = temporary_path(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def torch_write_failed(exc: RuntimeError) -> bool:
    """torch's zip writer raises RuntimeError, not OSError, when a write fails (full disk, quota):
    '[enforce fail at inline_container.cc:...] . unexpected pos ...' or 'PytorchStreamWriter failed ...'."""
    return "inline_container.cc" in str(exc) or "PytorchStreamWriter" in str(exc)


class CheckpointWriteError(CheckpointError):
    """A save that could not be written (disk full, quota, permissions); the previous one is intact."""


def merge_expert_state(ckpt_dir: Path, ep_rank: int):
    """custom_load_fn for engine.load_checkpoint: DeepSpeed hands us rank 0's module state dict
    (rank 0's experts only); replace its expert entries by this EP rank's own expert file, then
    load strictly so a missing or extra tensor is an error, not silence."""
    def load(src: dict, dst: torch.nn.Module) -> None:
        own = set(ds.expert_param_names(dst))
        state = {k: v for k, v in src.items() if k not in own and ".experts." not in k}
        path = ckpt_dir / experts_file(ep_rank)
        if own:
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint {ckpt_dir} has no {path.name} for expert-parallel rank {ep_rank}")
            state.update(load_ours(path))
        dst.load_state_dict(state, strict=True)
    return load


@dataclass
class Restored:
    """What a resume hands back to the trainer besides the engine state it loaded."""
    tag: str
    folder: Path
    meta: CheckpointMeta  # meta.json of the checkpoint
    components: dict  # this rank's component states, by the names given to save()
    all_components: list[dict] | None = None  # every source rank's, when the layout changed
    reshard_note: str | None = None  # "resharding from ... to ... (N s)" when the layout changed


class TrainingCheckpointer:
    """One rank's view of checkpoint.dir: save() and load() the full training state.

    ctx: the run's DistContext (rank, ep_rank, edp_rank, is_main); message: rank-0 log line.
    Tags are tag_for_step(step); `latest` moves only after every rank's files are on disk.
    """

    def __init__(self, directory: str | Path, keep: int, ctx, message: Callable[[str], None] = print,
                 trust_pickles: bool = False, verify: bool = True):
        self.dir = CheckpointDir(directory, keep)
        self.ctx = ctx
        self.trust_pickles = trust_pickles  # skip the pickle scan (checkpoints from a trusted source only)
        self.check_digests = verify  # compare files with the sha256 recorded at save (checkpoint.verify)
        self.message = message
        self.resumed_tag: str | None = None  # never pruned, never rewritten
        self.last_tag: str | None = None  # newest tag written or resumed from

    def save(self, engine, step: int, meta: CheckpointMeta, components: dict) -> str | None:
        """Write tag_for_step(step): engine state, experts, this rank's `components` (name ->
        state dict) and RNG; rank 0 then writes meta.json (with every file's digest) + COMPLETE,
        moves `latest`, prunes. Returns None (and writes nothing) when some parameter or
        optimizer state is not finite on any rank."""
        tag = tag_for_step(step)
        if tag == self.resumed_tag and self.dir.is_complete(tag):
            return tag  # nothing happened since we loaded it: never rewrite the checkpoint in use
        bad = nonfinite_names(training_tensors(engine))
        if self._any_rank(bool(bad)):
            if bad:
                print(f"checkpoint: REFUSED to save {tag}: rank {self.ctx.rank} holds non-finite values in "
                      f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; {self.last_tag or 'no checkpoint'} "
                      f"stays the latest", flush=True)
            return None
        dist.barrier()
        if self.ctx.is_main:
            self.dir.discard(tag)  # a dead save or another run's tag: start clean
        dist.barrier()
        folder = self.dir.path(tag)
        mine = None  # (this rank's failure in words, whether more space would fix it)
        written: dict[str, str] = {}
        try:
            written = self._write_files(engine, tag, folder, meta, components)
        except OSError as exc:
            mine = (f"rank {self.ctx.rank}: {exc.strerror or exc}", exc.errno in (errno.ENOSPC, errno.EDQUOT))
        except RuntimeError as exc:  # torch.save (ours and DeepSpeed's) reports a failed write this way
            if not torch_write_failed(exc):
                raise
            mine = (f"rank {self.ctx.rank}: torch.save could not write ({str(exc).splitlines()[0]}), usually a full "
                    f"disk or quota", True)
        reports = [None] * dist.get_world_size()
        dist.all_gather_object(reports, (mine, written))  # each rank's failure (so rank 0's line names it) or digests
        found = [f for f, _ in reports if f]
        if found:
            if self.ctx.is_main:
                self.dir.discard(tag)
            hint = "free space or choose another checkpoint.dir" if any(full for _, full in found) \
                else "check checkpoint.dir"
            raise CheckpointWriteError(f"could not write checkpoint {folder} ({found[0][0]}); {hint}; the last "
                                       f"complete checkpoint, {self.last_tag or 'none'}, is intact")
        digests = [d for _, d in reports]  # every rank's {file name: sha256}
        if self.ctx.is_main:
            self.dir.mark_complete(tag, meta.with_files({k: v for d in digests for k, v in d.items()}).to_json())
            self.dir.set_latest(tag)
            deleted = self.dir.prune(protect={t for t in (tag, self.resumed_tag) if t})
            self.message(f"checkpoint: saved {folder}" + (f" (removed {', '.join(deleted)})" if deleted else ""))
            short = self.dir.room_for_another(tag)
            if short:
                self.message(f"checkpoint: WARNING: {short}")
        dist.barrier()
        self.last_tag = tag
        return tag

    def _write_files(self, engine, tag: str, folder: Path, meta: CheckpointMeta, components: dict) -> dict[str, str]:
        """This rank's share of a save; returns {file name: sha256} of what it wrote."""
        engine.save_checkpoint(str(self.dir.root), tag, client_state={"janus_meta": meta.to_dict()}, save_latest=False)
        module = engine.module
        mine = [MODEL_STATES] if self.ctx.is_main else []
        if self.ctx.edp_rank == 0:
            expert_names = set(ds.expert_param_names(module))
            experts = {n: p.detach().cpu().clone() for n, p in module.named_parameters() if n in expert_names}
            if experts:
                atomic_torch_save(experts, folder / experts_file(self.ctx.ep_rank))
                mine.append(experts_file(self.ctx.ep_rank))
        zero_file = ds.zero_file_name(engine, self.dir.root, tag) if meta.layout.zero_stage > 0 else None
        own = {**components, "rng": rng.capture(), "rank": self.ctx.rank, "ep_rank": self.ctx.ep_rank,
               "edp_rank": self.ctx.edp_rank, "zero_file": zero_file, "zero_layout": ds.zero_layout(engine, module)}
        atomic_torch_save(own, folder / rank_file(self.ctx.rank))
        mine += [rank_file(self.ctx.rank)] + ([zero_file] if zero_file else [])
        return {name: file_digest(folder / name) for name in mine}

    def _any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on some rank (the ranks decide together)."""
        tensor = torch.tensor([float(flag)], device=self.ctx.device)
        dist.all_reduce(tensor)
        return bool(tensor.item() > 0)

    def verify(self, tag: str, layout: Layout | None = None, reads: list[str] | None = None) -> str | None:
        """This rank's problem with `tag` (digest mismatch, missing file, unsafe pickle, an edited
        name), or None. On the layout that wrote it: checks exactly the files this rank reads on
        resume: its own state, its experts and every file DeepSpeed's load_checkpoint unpickles,
        `reads` (deepspeed_internals.load_checkpoint_reads of the live engine; without one, the
        model states and the ZeRO partition DeepSpeed names for this rank from meta.json's layout
        and precision). No file name recorded in the checkpoint decides what is scanned. On another
        layout (resharding): the ranks share the digest checks of all files, and the pickles are
        scanned where they are read (checkpoint/reshard.py)."""
        folder = self.dir.path(tag)
        try:
            meta = read_meta(folder)
            recorded = meta.files if self.check_digests else None  # None: not checked (scan only)
            if layout is not None and meta.layout != layout:
                if recorded is not None:
                    verify_digests(folder, recorded, sorted(recorded)[self.ctx.rank::layout.world_size])
                check_pickle_safe(folder / MODEL_STATES, trust=self.trust_pickles)
                return None
            if recorded is not None:
                verify_digests(folder, recorded, [rank_file(self.ctx.rank)])
            rank_state(folder, self.ctx.rank, meta)  # weights_only: runs nothing; refuses an edited zero_file
            if reads is None:
                reads = [MODEL_STATES] + ([meta.zero_file(self.ctx.rank)] if meta.zero_file(self.ctx.rank) else [])
            experts = experts_file(self.ctx.ep_rank)
            extra = [experts] if (recorded is not None and experts in recorded) or \
                (recorded is None and (folder / experts).exists()) else []
            if recorded is not None:
                verify_digests(folder, recorded, [*reads, *extra])
            for name in [*reads, *extra]:
                if not (folder / name).is_file():
                    raise IntegrityError(f"{folder / name}: file missing (read on resume)")
                check_pickle_safe(folder / name, trust=self.trust_pickles)
        except (IntegrityError, OSError, ValueError, KeyError) as exc:
            return f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc)
        return None

    def choose(self, choice: str, layout: Layout | None = None, engine=None, check_meta=None) -> str | None:
        """checkpoint.resume: auto = the newest complete checkpoint that verifies on every rank
        (falling back past damaged ones, loudly); none; or a tag, which must verify. Rank 0
        proposes, every rank verifies its own files, all follow the same decision. engine: the
        live engine whose load_checkpoint will read the files (they are named as it names them);
        check_meta(folder, meta): raises CheckpointError when the run cannot continue from a tag
        (another model, precision or batch): a setting to fix, not damage, so it is never skipped."""
        if choice == "none":
            return None
        if choice == "auto":
            latest = self.dir.latest()
            candidates = [latest] + [t for t in reversed(self.dir.complete_tags()) if t != latest] if latest else []
        elif not self.dir.is_complete(choice):
            raise CheckpointError(
                f"--resume {choice}: no complete checkpoint {self.dir.path(choice)} "
                f"(complete ones: {', '.join(self.dir.complete_tags()) or 'none'})")
        else:
            candidates = [choice]
        shared = [candidates]
        dist.broadcast_object_list(shared, src=0)  # rank 0's view of the directory decides
        for tag in shared[0]:
            if check_meta is not None:
                try:
                    meta = read_meta(self.dir.path(tag))
                except CheckpointError:
                    meta = None  # unreadable: verify says so
                if meta is not None:
                    check_meta(self.dir.path(tag), meta)
            reads = ds.load_checkpoint_reads(engine, self.dir.root, tag) if engine is not None else None
            problem = self.verify(tag, layout, reads)
            problems = [None] * dist.get_world_size()
            dist.all_gather_object(problems, problem)
            found = [p for p in problems if p]
            if not found:
                if tag != shared[0][0]:
                    self.message(f"checkpoint: RESUMING FROM {tag}, the newest checkpoint that verifies")
                return tag
            self.message(f"checkpoint: {self.dir.path(tag)} is DAMAGED and will not be used: {found[0]}"
                         + (f" (and {len(found) - 1} more problems)" if len(found) > 1 else ""))
            if choice != "auto":
                raise CheckpointError(f"--resume {choice}: {found[0]}; resume from another tag or with --resume auto")
        if shared[0]:
            raise CheckpointError(f"no checkpoint in {self.dir.root} verifies (see the messages above); "
                                  f"start fresh with --resume none or restore the files")
        return None

    def load(self, engine, choice: str, layout: Layout, check_meta=None) -> Restored | None:
        """Restore the engine and RNG from the chosen checkpoint; None when starting fresh.
        layout: this run's world_size, ep_size and zero_stage; when they differ from the
        checkpoint's, the state is resharded (checkpoint/reshard.py). check_meta(folder, meta):
        raises CheckpointError when the run cannot continue from it (before any tensor is loaded)."""
        tag = self.choose(choice, layout, engine, check_meta)
        if tag is None:
            return None
        folder = self.dir.path(tag)
        meta = read_meta(folder)
        if meta.layout == layout:
            engine.load_checkpoint(str(self.dir.root), tag,
                                   custom_load_fn=merge_expert_state(folder, self.ctx.ep_rank))
            own = load_ours(folder / rank_file(self.ctx.rank))
            rng.restore(own["rng"])
            self.resumed_tag = self.last_tag = tag
            return Restored(tag, folder, meta, own)
        start = time.perf_counter()
        problem = None
        try:
            ranks = read_rank_files(folder, meta)
            source = SourceCheckpoint(folder, ranks, trust=self.trust_pickles)
            experts = meta.model_config(str(folder / "meta.json")).num_experts
            apply_to_engine(engine, source, folder, max(1, experts // meta.layout.ep_size), self.trust_pickles)
        except (IntegrityError, OSError, KeyError, ValueError) as exc:  # CheckpointError is a ValueError
            problem = f"rank {self.ctx.rank}: {type(exc).__name__ + ': ' if isinstance(exc, KeyError) else ''}{exc}"
        problems = [None] * dist.get_world_size()
        dist.all_gather_object(problems, problem)  # each rank read other files: decide together
        found = [p for p in problems if p]
        if found:
            raise CheckpointError(f"cannot reshard checkpoint {folder} onto {layout.describe()}: {found[0]}")
        own = ranks[self.ctx.rank % len(ranks)]  # RNG: from the source rank of the same number (mod its world)
        rng.restore(own["rng"])
        note = (f"resharding from {meta.layout.describe()} to {layout.describe()} took "
                f"{time.perf_counter() - start:.1f} s (read {len(source.opened)} of {len(ranks)} ZeRO partition "
                f"files on rank {self.ctx.rank})")
        self.resumed_tag = self.last_tag = tag
        return Restored(tag, folder, meta, own, [ranks[r] for r in sorted(ranks)], note)
