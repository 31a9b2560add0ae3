"""Typed run configuration: one YAML file maps 1:1 onto the dataclasses below (the model
section's is in model_config.py, the typed building and float ranges in config_schema.py;
both are importable from here too).

Unknown keys and wrong types are errors that name the key and the file. `--set a.b=value`
overrides only keys that exist.

Every check of a config's own values lives here (each section's validate(), called at load):
messages are "<file>: <section>.<key>=<value> <what is wrong>; <what to do>". Checks that need
the world size (RunConfig.check_world_size, batch_plan) run at startup, before any heavy work;
checks of the environment (files exist, directories writable) are in engine/startup.py.

Paths: a relative path written in a YAML file is relative to that file's directory; one given
on the command line (--set) is relative to the working directory. Both are made absolute at load.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from janus_pretrain.atomic_io import read_text
from janus_pretrain.config_schema import (FRACTION, NON_NEGATIVE, OPEN_FRACTION, POSITIVE, ConfigError, Range,  # noqa: F401
                                          build_section, check_floats, check_int_limits, safe_load_yaml, yaml_problem,
                                          to_dict)  # some re-exported
from janus_pretrain.model_config import ModelConfig, model_config_from_dict  # noqa: F401 (re-exported)


@dataclass
class DataConfig:
    manifest: str = ""  # manifest.json written by data_prep/shard_genomes.py (relative to the YAML file)
    seq_len: int = 1024  # bases per training sample, cropped from the sharded windows
    mixture: dict[str, float] = field(default_factory=dict)  # species -> weight; empty = manifest weights
    rc_augment: bool = True  # reverse-complement each training sample with probability 1/2
    max_n_frac: float = 0.1  # skip crops whose N fraction exceeds this
    shuffle_buffer: int = 256  # samples held for shuffling
    crops_per_window: int = 0  # random crops taken from each window; 0 = window_bp // seq_len (at least 1)
    num_workers: int = 1  # dataloader worker processes per rank (lowered to divide streams / ranks)
    streams: int = 0  # slot streams of the global sample order, fixed for the run; ranks must divide it; 0 = ranks x num_workers at the start (set e.g. 64 to resume on other rank counts)
    repeat_weight: float = 1.0  # loss weight of soft-masked (repeat) bases; 1 = no down-weighting
    valid_max_batches: int = 0  # validation batches per species; 0 = the whole split
    verify_shards: bool = True  # check each shard's sha256 against manifest.json before a loader process first reads it
    on_corrupt: Literal["error", "skip"] = "error"  # damaged shard/sample: stop, or skip it and count data/corrupt_samples

    FLOAT_RANGES: ClassVar[dict[str, Range]] = {"max_n_frac": FRACTION, "repeat_weight": NON_NEGATIVE,
                                                "mixture": NON_NEGATIVE}
    INT_LIMITS: ClassVar[dict[str, int]] = {"seq_len": 2 ** 24, "shuffle_buffer": 2 ** 24, "streams": 2 ** 16,
                                            "num_workers": 256}

    def validate(self, where: str) -> None:
        check_floats(self, "data", where)
        check_int_limits(self, "data", where)
        if self.streams < 0 or self.num_workers < 0:
            raise ConfigError(f"{where}: data.streams and data.num_workers must be >= 0 "
                              f"(got {self.streams}, {self.num_workers})")


MAX_GRAD_ACCUM = 2 ** 16  # micro batches per optimizer step, given or derived from global_batch_tokens


@dataclass
class TrainConfig:
    micro_batch: int = 1  # samples per rank per forward/backward
    grad_accum: int = 0  # micro batches per optimizer step; 0 = derived from global_batch_tokens
    global_batch_tokens: int = 0  # tokens per optimizer step over all ranks; 0 = micro_batch * seq_len * (world / cp_size) * grad_accum
    steps: int = 100  # optimizer steps of the whole run
    seed: int = 0  # seeds model init, data order and augmentation
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 mixed precision (fp32 master weights) or pure fp32
    grad_clip: float = 1.0  # global gradient-norm clip; 0 = off
    eval_every: int = 0  # optimizer steps between validations; 0 = only at the end
    max_bad_steps: int = 5  # stop after this many consecutive steps with NaN/inf loss
    watchdog_s: int = 300  # end the job (exit 76) when a rank makes no progress this long (at least 20 x the slowest step); 0 = off

    FLOAT_RANGES: ClassVar[dict[str, Range]] = {"grad_clip": NON_NEGATIVE}
    # far above any real run (2^20-token batches, accumulation in the tens), far below what overflows or hangs
    INT_LIMITS: ClassVar[dict[str, int]] = {"micro_batch": MAX_GRAD_ACCUM, "grad_accum": MAX_GRAD_ACCUM,
                                            "global_batch_tokens": 2 ** 40, "steps": 10 ** 9}

    def validate(self, where: str) -> None:
        check_floats(self, "train", where)
        check_int_limits(self, "train", where)
        for key, low in (("steps", 1), ("max_bad_steps", 1), ("micro_batch", 1), ("grad_accum", 0),
                         ("global_batch_tokens", 0), ("eval_every", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"{where}: train.{key} must be >= {low} (got {getattr(self, key)})")


@dataclass
class OptimizerConfig:
    lr: float = 8.0e-3  # peak learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas
    eps: float = 1.0e-8  # AdamW epsilon
    weight_decay: float = 0.1  # decoupled AdamW weight decay of the decayed group
    no_decay: Literal["janus", "janusdna"] = "janus"  # exempt from decay: janus = biases, norm weights, embedding, A_log, D; janusdna (official) = biases and the embedding only

    FLOAT_RANGES: ClassVar[dict[str, Range]] = {"lr": POSITIVE, "betas": OPEN_FRACTION, "eps": POSITIVE,
                                                "weight_decay": NON_NEGATIVE}

    def validate(self, where: str) -> None:
        check_floats(self, "optimizer", where)
        if len(self.betas) != 2:
            raise ConfigError(f"{where}: optimizer.betas must be two numbers [beta1, beta2] (got {self.betas})")


@dataclass
class ScheduleConfig:
    warmup_fraction: float = 0.1  # linear warm-up over this fraction of train.steps
    min_lr: float = 1.0e-4  # cosine decay floor
    curve: Literal["warmup_cosine", "timm_cosine"] = "warmup_cosine"  # warmup_cosine: lr rises (s+1)/warmup; timm_cosine (official): timm's CosineLRScheduler with warmup_prefix, from warmup_init_lr
    warmup_init_lr: float = 1.0e-6  # timm_cosine: the lr of the first step

    FLOAT_RANGES: ClassVar[dict[str, Range]] = {"warmup_fraction": OPEN_FRACTION, "min_lr": NON_NEGATIVE,
                                                "warmup_init_lr": NON_NEGATIVE}

    def validate(self, where: str) -> None:
        check_floats(self, "schedule", where)


@dataclass
class ParallelConfig:
    zero_stage: int = 2  # DeepSpeed ZeRO stage
    ep_size: int = 1  # expert-parallel ranks each MoE layer's experts are sharded over
    cp_size: int = 1  # context-parallel ranks each sample is split over (consecutive ranks; data parallel = ranks / cp_size)

    def validate(self, where: str, model: ModelConfig, seq_len: int) -> None:
        ep, stage = self.ep_size, self.zero_stage
        if ep < 1:
            raise ConfigError(f"{where}: parallel.ep_size must be >= 1 (got {ep})")
        self._validate_context(where, model, seq_len)
        if stage not in (0, 1, 2, 3):
            raise ConfigError(f"{where}: parallel.zero_stage must be 0, 1, 2 or 3 (got {stage})")
        if model.has_moe() and model.num_experts % ep:
            raise ConfigError(f"{where}: parallel.ep_size={ep} does not divide model.num_experts={model.num_experts}")
        if ep > 1 and not model.has_moe():
            raise ConfigError(f"{where}: parallel.ep_size={ep} but the model has no MoE layers "
                              f"(model.expert_layer_period=0); set parallel.ep_size=1")
        if model.has_moe() and stage not in (1, 2):
            # ZeRO-0 does not reduce the expert grad norm across expert-parallel ranks (clipping then
            # differs from ep_size 1) and ZeRO-3 rejects non-AutoEP MoE layers
            raise ConfigError(f"{where}: parallel.zero_stage={stage} is not supported with MoE layers; use 1 or 2")

    def _validate_context(self, where: str, model: ModelConfig, seq_len: int) -> None:
        """What the model's context parallelism (model/context_parallel.py) refuses, refused at load."""
        cp = self.cp_size
        if cp < 1:
            raise ConfigError(f"{where}: parallel.cp_size must be >= 1 (got {cp})")
        if cp == 1:
            return
        if model.objective != "janus":
            raise ConfigError(f"{where}: parallel.cp_size={cp} needs model.objective=janus (got {model.objective}); "
                              f"set parallel.cp_size=1")
        if seq_len % cp:
            raise ConfigError(f"{where}: data.seq_len={seq_len} is not divisible by parallel.cp_size={cp}; choose a "
                              f"seq_len that is a multiple of cp_size (no padding: a pad would be a position)")
        if seq_len // cp < model.d_conv - 1:
            raise ConfigError(f"{where}: data.seq_len={seq_len} / parallel.cp_size={cp} = {seq_len // cp} positions per rank is "
                              f"shorter than the Mamba conv halo model.d_conv - 1 = {model.d_conv - 1}; use a "
                              f"longer seq_len or a smaller cp_size")


@dataclass
class CheckpointConfig:
    dir: str = "runs/default/checkpoints"  # DeepSpeed checkpoint directory; the run directory (metrics, config.json) is its parent
    every: int = 100  # optimizer steps between checkpoints; 0 = only at the end
    keep: int = 3  # keep the last K checkpoints
    resume: str = "auto"  # auto: continue from `latest` if present; none: start fresh; or a tag
    verify: bool = True  # check every file's sha256 (recorded at save) before resuming from it
    trust_pickles: bool = False  # skip the scan that refuses pickles referencing code we never write
    init_from: str = ""  # new run from trained weights: an export dir or a checkpoint dir[:TAG] (used only when there is nothing to resume)

    def validate(self, where: str) -> None:
        if self.keep < 1:
            raise ConfigError(f"{where}: checkpoint.keep must be >= 1 (got {self.keep})")
        if self.every < 0:
            raise ConfigError(f"{where}: checkpoint.every must be >= 0 (got {self.every})")
        if self.resume not in ("auto", "none") and "/" in self.resume:
            raise ConfigError(f"{where}: checkpoint.resume must be auto, none or a tag name inside checkpoint.dir")


@dataclass
class LoggingConfig:
    dir: str = "runs/default/tensorboard"  # TensorBoard log directory
    every: int = 10  # optimizer steps between log lines and scalars
    # where scalars go besides metrics.jsonl (engine/logging_backends.py): tensorboard (logging.dir),
    # csv (<run dir>/csv, one file per metric), wandb (Weights & Biases; pip install 'janus-pretrain[wandb]')
    backends: list[str] = field(default_factory=lambda: ["tensorboard"])
    wandb_project: str = "janus-pretrain"  # W&B project (backends includes wandb)
    wandb_entity: str = ""  # W&B user or team; empty = your default entity
    wandb_name: str = ""  # W&B run name; empty = the run directory's name

    BACKENDS: ClassVar[tuple[str, ...]] = ("tensorboard", "csv", "wandb")

    def validate(self, where: str) -> None:
        if self.every < 1:
            raise ConfigError(f"{where}: logging.every must be >= 1 (got {self.every})")
        for name in self.backends:
            if name not in self.BACKENDS or self.backends.count(name) > 1:
                raise ConfigError(f"{where}: logging.backends={self.backends}: {name!r} is "
                                  f"{'unknown' if name not in self.BACKENDS else 'listed twice'}; choose each of "
                                  f"{list(self.BACKENDS)} at most once")
        if "wandb" in self.backends and not self.wandb_project:
            raise ConfigError(f"{where}: logging.wandb_project is empty but logging.backends includes wandb; "
                              f"set logging.wandb_project")


@dataclass
class EvalConfig:
    suite: str = ""  # evaluation suite YAML probed during pretraining (relative to the run YAML); empty = no probes
    every: int = 0  # optimizer steps between probes (rank 0 logs probe/<task>/<metric>); 0 = no probes
    tasks: list[str] = field(default_factory=list)  # probe only these tasks of the suite; empty = all
    max_examples: int = 256  # rows per split per task (seeded, fixed subsample) so a probe takes seconds

    def validate(self, where: str) -> None:
        if self.every < 0 or self.max_examples < 0:
            raise ConfigError(f"{where}: eval.every and eval.max_examples must be >= 0")
        if self.every and not self.suite:
            raise ConfigError(f"{where}: eval.every={self.every} needs eval.suite (e.g. ../configs/eval/bundled.yaml), "
                              f"or set eval.every=0")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    deepspeed: dict[str, Any] = field(default_factory=dict)  # passed through into the generated DeepSpeed JSON
    source: str = ""  # the YAML file this run was loaded from (set by load_config, not by users)

    # dotted keys holding file-system paths (made absolute at load, see the module docstring)
    PATH_KEYS: ClassVar[tuple[str, ...]] = ("data.manifest", "checkpoint.dir", "checkpoint.init_from", "logging.dir",
                                            "eval.suite")

    def validate(self) -> None:
        where = self.source or "<config>"
        self.model.validate(where)
        self.data.validate(where)
        self.train.validate(where)
        self.optimizer.validate(where)
        self.schedule.validate(where)
        self.parallel.validate(where, self.model, self.data.seq_len)
        self.checkpoint.validate(where)
        self.logging.validate(where)
        self.eval.validate(where)
        if self.parallel.cp_size > 1 and self.eval.every:
            # the probes run every rank's forward on whole sequences; under CP a rank holds a slice
            raise ConfigError(f"{where}: eval.every={self.eval.every} (downstream probes) is not supported with "
                              f"parallel.cp_size={self.parallel.cp_size}; set eval.every=0 (held-out validation, "
                              f"train.eval_every, works with it)")

    def check_world_size(self, world_size: int) -> "BatchPlan":
        """What depends on the number of ranks: expert and context parallelism, the batch arithmetic."""
        where, ep, cp = self.source or "<config>", self.parallel.ep_size, self.parallel.cp_size
        if world_size % ep:
            raise ConfigError(f"{where}: parallel.ep_size={ep} does not divide the world size {world_size} "
                              f"(ranks); use an ep_size that divides the number of ranks")
        if world_size % cp:
            raise ConfigError(f"{where}: parallel.cp_size={cp} does not divide the world size {world_size} "
                              f"(ranks); use a cp_size that divides the number of ranks")
        data_ranks = world_size // cp
        if self.data.streams % data_ranks:
            raise ConfigError(f"{where}: data.streams={self.data.streams} is not divisible by the {data_ranks} "
                              f"data-parallel ranks (world size {world_size} / cp_size {cp}); each data-parallel "
                              f"rank reads an equal share of the slot streams")
        return batch_plan(self, world_size)


@dataclass(frozen=True)
class BatchPlan:
    micro_batch: int  # samples per data-parallel rank per forward
    grad_accum: int  # micro batches per optimizer step
    world_size: int  # all ranks
    seq_len: int  # tokens per sample (each rank of a context-parallel group holds seq_len / cp_size of them)
    cp_size: int = 1  # ranks sharing one sample (context parallelism)

    @property
    def data_ranks(self) -> int:
        """Data-parallel degree: ranks that read different samples."""
        return self.world_size // self.cp_size

    @property
    def ranks_text(self) -> str:
        """The data-parallel degree in words, as the batch lines print it."""
        if self.cp_size == 1:
            return f"{self.world_size} ranks"
        return f"{self.data_ranks} data-parallel ranks ({self.world_size} ranks / cp_size {self.cp_size})"

    @property
    def samples_per_step(self) -> int:
        return self.micro_batch * self.grad_accum * self.data_ranks

    @property
    def tokens_per_step(self) -> int:
        return self.samples_per_step * self.seq_len


def batch_plan(config: RunConfig, world_size: int) -> BatchPlan:
    """Resolve gradient accumulation from train.global_batch_tokens, or check the two agree."""
    train, seq_len, where = config.train, config.data.seq_len, config.source or "<config>"
    cp = config.parallel.cp_size
    one_step = BatchPlan(train.micro_batch, 1, world_size, seq_len, cp)  # the layout, before accumulation
    data_ranks, ranks = one_step.data_ranks, one_step.ranks_text  # a context-parallel group reads one sample
    per_micro_step = train.micro_batch * seq_len * data_ranks  # tokens of one micro step on all ranks
    if train.global_batch_tokens:
        accum, rest = divmod(train.global_batch_tokens, per_micro_step)
        if rest or accum < 1:
            raise ConfigError(
                f"{where}: train.global_batch_tokens={train.global_batch_tokens} is not a multiple of "
                f"micro_batch x seq_len x data-parallel ranks = {train.micro_batch} x {seq_len} x {data_ranks} = "
                f"{per_micro_step}; change train.global_batch_tokens, train.micro_batch or the number of ranks")
        if train.grad_accum and train.grad_accum != accum:
            raise ConfigError(
                f"{where}: train.grad_accum={train.grad_accum} disagrees with train.global_batch_tokens="
                f"{train.global_batch_tokens} (which needs {accum} at micro_batch {train.micro_batch}, seq_len "
                f"{seq_len}, {ranks}); set one of them to 0")
        if accum > MAX_GRAD_ACCUM:
            raise ConfigError(
                f"{where}: train.global_batch_tokens={train.global_batch_tokens} needs grad_accum={accum:,} at "
                f"micro_batch {train.micro_batch}, seq_len {seq_len}, {ranks}, above its limit "
                f"{MAX_GRAD_ACCUM:,} (docs/training.md, 'Limits'); lower train.global_batch_tokens")
    else:
        accum = train.grad_accum or 1
    return BatchPlan(train.micro_batch, accum, world_size, seq_len, cp)


def _apply_override(raw: dict, override: str, where: str) -> None:
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected key=value, e.g. model.d_model=144")
    dotted, text = override.split("=", 1)
    parts = dotted.strip().split(".")
    cls: Any = RunConfig
    node = raw
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if dataclasses.is_dataclass(cls) and part not in hints:
            raise ConfigError(f"--set {dotted}: unknown key '{'.'.join(parts[:depth + 1])}' ({where})")
        if depth == len(parts) - 1:
            node[part] = safe_load_yaml(text)
            return
        cls = hints.get(part, dict) if dataclasses.is_dataclass(cls) else dict
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{'.'.join(parts[:depth + 1])}' is not a section ({where})")


def config_from_dict(raw: dict, where: str = "<dict>", overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    raw = dict(raw or {})
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for override in overrides:
        _apply_override(raw, override, where)
    config = build_section(RunConfig, raw, "", where)
    config.source = where
    config.validate()
    return config


def read_yaml_mapping(path: Path, kind: str, expected: str) -> dict:
    """A YAML file whose top level is a mapping; `kind` and `expected` word the errors
    ("config file not found", "top level must be a mapping <expected>")."""
    text = read_text(path, ConfigError, f"{kind} file not found: {path}")
    try:
        raw = safe_load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if raw is None:  # an empty (or comments-only) file would silently mean "every default"
        raise ConfigError(f"{path}: holds no YAML (empty, or only comments); expected a mapping {expected}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping {expected}")
    return raw


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a run YAML (sections model, data, train, ...) with optional `key=value` overrides.

    Relative paths (RunConfig.PATH_KEYS) written in the YAML are resolved against the YAML
    file's directory, relative ones from overrides or defaults against the working directory.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "config", "of sections (model, data, train, ...)")
    for dotted in RunConfig.PATH_KEYS:
        section, key = dotted.split(".")
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute():
            raw[section] = {**raw[section], key: str((path.parent / value).resolve())}
    config = config_from_dict(raw, str(path), overrides)
    for dotted in RunConfig.PATH_KEYS:
        section, key = dotted.split(".")
        value = getattr(getattr(config, section), key)
        if value and not Path(value).is_absolute():
            setattr(getattr(config, section), key, str(Path(value).resolve()))
    return config


