"""meta.json, the record that describes one checkpoint: the one owner of its keys.

Written by rank 0 with COMPLETE (checkpoint/layout.py: CheckpointDir.mark_complete), built from
the run by CheckpointMeta.of_run (the trainer calls it), read back with CheckpointMeta.from_json
by every reader (resume, resharding, verification, conversion). A change to what a checkpoint
records is a change to this file: a field here, its value in of_run, and, when checkpoints
already on disk lack it, its value for them in OLDER_DEFAULTS.

On disk the record is one flat JSON object (sorted keys, indented), as main wrote it before this
record existed:

    format             META_FORMAT; absent in checkpoints written before it was recorded (same keys)
    config             the whole run config (config.to_dict); its model section says what the weights are
    step, tokens_seen, bad_steps, last_loss, train_seconds
                       the counters that survive a restart (Progress)
    world_size, ep_size, zero_stage, cp_size
                       the parallel layout that wrote it (Layout): another layout reshards;
                       cp_size absent in checkpoints written before context parallelism (= 1)
    precision, micro_batch, grad_accum
                       what one optimizer step was (a resume on another layout keeps the batch)
    data_streams       slots of the data stream (data.streams), or null for streams without slots
    tokenizer_version, vocab
                       the token ids the weights were trained on
    files              {file name: sha256} of every file of the tag, added when COMPLETE is written
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Optional

from janus_pretrain import deepspeed_internals as ds
from janus_pretrain.atomic_io import read_text
from janus_pretrain.checkpoint.layout import META, CheckpointError
from janus_pretrain.config_schema import ConfigError, check_value, to_dict
from janus_pretrain.model_config import ModelConfig, model_config_from_dict
from janus_pretrain.tokenizer import BASE_IDS, N_ID, SPECIAL_TOKENS, TOKENIZER_VERSION

META_FORMAT = "janus-checkpoint-v1"


class MetaError(CheckpointError):
    """A meta.json that cannot be read; the message names the file and the key."""


def vocabulary() -> dict[str, int]:
    """Token -> id of the tokenizer the weights were trained with."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({base: i for base, i in zip("ACGTN", (*BASE_IDS, N_ID))})
    return vocab


@dataclass
class Progress:
    """Counters that survive a restart; the trainer advances them, every checkpoint records them."""
    step: int = 0  # optimizer steps attempted
    tokens_seen: int = 0  # tokens consumed on all ranks
    bad_steps: int = 0  # steps skipped for NaN/inf over the whole run
    last_loss: float = math.nan  # global mean loss of the last good step
    train_seconds: float = 0.0  # wall time in Trainer.train() over the run's sessions, up to this checkpoint


@dataclass(frozen=True)
class Layout:
    """The parallel layout a checkpoint was written on; resuming on another one reshards (checkpoint/reshard.py)."""
    world_size: int  # all ranks
    ep_size: int  # expert-parallel group size
    zero_stage: int  # DeepSpeed ZeRO stage (0, 1 or 2)
    cp_size: int = 1  # context-parallel group size: world_size / cp_size data-parallel ranks

    @property
    def data_ranks(self) -> int:
        """Ranks that read different samples; each has its own data-stream position."""
        return self.world_size // self.cp_size

    def describe(self) -> str:
        cp = f" / cp {self.cp_size}" if self.cp_size > 1 else ""
        return f"world {self.world_size} / ep {self.ep_size} / ZeRO-{self.zero_stage}{cp}"


@dataclass
class CheckpointMeta:
    config: dict[str, Any]  # the run config as a dict (config.to_dict)
    progress: Progress
    layout: Layout
    precision: str  # train.precision: bf16 | fp32 (the dtype of the saved training weights)
    micro_batch: int  # samples per rank per forward
    grad_accum: int  # micro batches per optimizer step
    data_streams: Optional[int] = None  # slots of the data stream; None: the stream has no slots
    tokenizer_version: str = TOKENIZER_VERSION
    vocab: dict[str, int] = field(default_factory=vocabulary)
    files: Optional[dict[str, str]] = None  # file name -> sha256, set when the tag is marked complete

    # keys that meta.json files already on disk may lack, with the value they mean there
    OLDER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "format": META_FORMAT,  # written from META_FORMAT's introduction on; the keys were the same before
        "train_seconds": 0.0,  # recorded since the run summary accounts for every session (e391e79)
        "files": None,  # digests recorded since checkpoints are verified (bb3a201): not checked when absent
        "cp_size": 1,  # recorded since context parallelism (parallel.cp_size); every run before had none
    }

    @classmethod
    def of_run(cls, config, plan, layout: Layout, progress: Progress, data_streams: int | None) -> "CheckpointMeta":
        """The record of a checkpoint of this run now (config: RunConfig, plan: its BatchPlan)."""
        return cls(config=to_dict(config), progress=replace(progress), layout=layout,
                   precision=config.train.precision, micro_batch=plan.micro_batch, grad_accum=plan.grad_accum,
                   data_streams=data_streams)

    def with_files(self, files: dict[str, str]) -> "CheckpointMeta":
        return replace(self, files=dict(files))

    # ---- reading what it records ----
    def model_config(self, where: str = "meta.json") -> ModelConfig:
        """The model the weights belong to; MetaError when this version cannot read it."""
        try:
            return model_config_from_dict(dict(self.config.get("model", {})), where)
        except ConfigError as exc:
            raise MetaError(str(exc)) from None

    def section(self, name: str) -> dict[str, Any]:
        """One section of the recorded run config, e.g. 'data' or 'optimizer' (empty when absent)."""
        return dict(self.config.get(name) or {})

    def zero_file(self, rank: int) -> str | None:
        """DeepSpeed's ZeRO partition file of `rank` (None under ZeRO-0), named by DeepSpeed's own
        function from the layout and precision recorded here, never by a name a file records."""
        return ds.zero_file_of_rank(rank, self.precision == "bf16") if self.layout.zero_stage > 0 else None

    @property
    def tokens_per_step(self) -> int:
        seq_len = self.section("data").get("seq_len", 0)
        return self.micro_batch * self.grad_accum * self.layout.data_ranks * seq_len

    # ---- the file ----
    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object (also handed to DeepSpeed as client state: plain values only)."""
        out = {"format": META_FORMAT, "config": self.config, **asdict(self.progress), **asdict(self.layout),
               "precision": self.precision, "micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
               "data_streams": self.data_streams, "tokenizer_version": self.tokenizer_version, "vocab": self.vocab}
        if self.files is not None:
            out["files"] = self.files
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> "CheckpointMeta":
        """The typed record; a wrong type, a missing or an unknown key is a MetaError naming it."""
        raw = {**cls.OLDER_DEFAULTS, **raw}
        if raw["format"] != META_FORMAT:
            raise MetaError(f"{where}: format {raw['format']!r} is not {META_FORMAT!r}: written by another version "
                            f"of janus-pretrain; read it with that version")
        nested = {"progress": Progress, "layout": Layout}  # flattened into the top level on disk
        groups = {None: cls, **nested}
        known = {"format"} | {f.name for part in groups.values() for f in dataclasses.fields(part)} - set(nested)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MetaError(f"{where}: unknown keys {unknown}: written by a newer janus-pretrain; use that version")
        missing = sorted(known - set(raw))  # every key is recorded (older files: OLDER_DEFAULTS filled them in)
        if missing:
            raise MetaError(f"{where}: keys {missing} missing: not a complete janus-pretrain meta.json")
        values: dict[Any, dict[str, Any]] = {}
        try:
            for name, part in groups.items():
                hints = typing.get_type_hints(part)
                values[name] = {f.name: check_value(raw[f.name], hints[f.name], f.name, where)
                                for f in dataclasses.fields(part) if f.name not in nested}
        except ConfigError as exc:
            raise MetaError(str(exc)) from None
        return cls(**values[None], **{name: part(**values[name]) for name, part in nested.items()})

    @classmethod
    def from_json(cls, text: str, where: str) -> "CheckpointMeta":
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise MetaError(f"{where}: not valid JSON ({exc}); the checkpoint is damaged: use another tag") from None
        if not isinstance(raw, dict):
            raise MetaError(f"{where}: not a JSON object; not a janus-pretrain meta.json")
        return cls.from_dict(raw, where)

    @classmethod
    def read(cls, path: Path) -> "CheckpointMeta":
        return cls.from_json(read_text(path, MetaError, f"{path} missing; not a janus-pretrain checkpoint"), str(path))


def read_meta(folder: Path) -> CheckpointMeta:
    """The meta.json of one tag directory."""
    return CheckpointMeta.read(folder / META)
