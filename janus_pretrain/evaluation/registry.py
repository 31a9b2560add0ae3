"""Evaluation suites: one YAML file describes tasks, their files, split rule, metrics and recipe.

    name: bundled
    recipe: {head: probe, lr: 1.0e-3, epochs: 5}       # suite default, tasks may override keys
    tasks:
      - name: splice_uci
        kind: classification                            # a kind of evaluation/kinds/: classification | regression | zero_shot_snv
        train: ../../data/labels/splice_train.tsv       # paths relative to the suite file
        valid: ../../data/labels/splice_valid.tsv
        test: ../../data/labels/splice_test.tsv
        split: {rule: given}                            # given | valid_fraction | kfold
        metrics: [accuracy, mcc, f1_macro]

A benchmark kind (nt, genomic_benchmarks, dnalongbench_eqtl) reads a downloaded dataset instead:
its tasks name no files, the suite's `data_root` names the download (`janus evaluate --data-root`
replaces it) and the task's `root` (default: the kind's, e.g. the task name) the task's place in
it; the protocol comes from evaluation/benchmarks/official.py, scaled down by a Scale (the
--window-bp, --max-train, --max-test, --grid and --epochs flags).

Every task gets a version: a hash of its resolved definition (recipe included) and of the
SHA-256 of every file it reads. Changing a label, a split rule or a learning rate changes the
version, so a number in results.json names exactly what produced it (lm-eval-harness style).
Unknown keys, wrong types and missing files are ConfigErrors naming the key and the suite file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from janus_pretrain.config import ConfigError, build_section, read_yaml_mapping
from janus_pretrain.digests import file_digest
from janus_pretrain.downstream.finetune import FinetuneSettings
from janus_pretrain.downstream.task_metrics import METRICS
from janus_pretrain.evaluation.kinds import KINDS, TaskKind

SUITE_SCHEMA = "janus-eval-suite-v1"


@dataclass
class Recipe(FinetuneSettings):
    """How every model is run on a task: the finetune settings (downstream/finetune.py) and the
    suite's own keys. A suite runs every task for several models and seeds, so its finetuning is
    shorter than one `janus finetune` job's (epochs 3 and patience 2 instead of 10 and 3)."""
    epochs: int = 3  # finetune: passes over the training set (upper bound; early stopping may end sooner)
    patience: int = 2  # finetune: validations without improvement before stopping
    head: Literal["probe", "finetune"] = "probe"  # probe: frozen backbone, cached mean states + logistic/ridge regression; finetune: backbone + linear head end to end
    probe_c: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])  # probe: inverse L2 strengths tried, chosen on validation
    kmer_k: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])  # k-mer baseline: k values tried, chosen on validation
    window: int = 1024  # zero-shot: bases of reference context around each variant
    max_train: int = 0  # use at most this many training examples (seeded subsample); 0 = all


@dataclass
class SplitSpec:
    rule: Literal["given", "valid_fraction", "kfold"] = "given"  # given: train/valid/test files; valid_fraction: valid cut from train; kfold: folds over train
    valid_fraction: float = 0.1  # valid_fraction/kfold: share of the training rows held out for validation
    folds: int = 5  # kfold: number of folds (each fold is the test set once)
    seed: int = 0  # seed of the split itself (fixed per task, independent of the run seeds)


@dataclass
class TaskSpec:
    name: str = ""  # unique within the suite; results and probe metrics are keyed by it
    kind: str = "classification"  # what is predicted: a kind of evaluation/kinds/ (classification | regression | zero_shot_snv)
    format: Literal["auto", "tsv", "csv", "parquet", "genomic_benchmarks", "vcf", "variants_tsv"] = "auto"  # auto: from the file suffix
    train: str = ""  # training table (or Genomic Benchmarks split directory)
    valid: str = ""  # validation table; empty with split.rule valid_fraction or kfold
    test: str = ""  # test table; empty with split.rule kfold
    variants: str = ""  # zero_shot_snv: VCF or TSV (chrom pos ref alt label), positions 1-based
    fasta: str = ""  # zero_shot_snv: reference FASTA (plain or bgzip)
    sequence_column: str = "sequence"  # column holding the DNA sequence
    label_column: str = "label"  # column holding the label (class name or number; VCF: INFO key)
    split: SplitSpec = field(default_factory=SplitSpec)  # how train/valid/test are formed
    metrics: list[str] = field(default_factory=list)  # empty = the kind's defaults
    recipe: dict[str, Any] = field(default_factory=dict)  # overrides of the suite recipe for this task
    description: str = ""  # one line for results.md
    root: str = ""  # benchmark kinds: the task's place under the suite's data_root (default: the kind's)


@dataclass
class SuiteFile:
    name: str = ""  # suite name, written into results
    description: str = ""  # one paragraph for results.md
    recipe: dict[str, Any] = field(default_factory=dict)  # default recipe of every task (keys of Recipe)
    tasks: list[TaskSpec] = field(default_factory=list)  # the tasks, run in this order
    data_root: str = ""  # benchmark kinds: directory of the downloaded data (relative to this file; --data-root replaces it)
    published: str = ""  # published figures printed beside the results (configs/eval/published/*.yaml), relative to this file


@dataclass(frozen=True)
class Scale:
    """A run scaled down from its protocol (janus evaluate flags; 0 or empty: as the suite says).
    Part of every task's version when set, so a scaled-down number never passes for a full one."""
    window_bp: int = 0  # input length: NT/GB max_length, eQTL window (seq_len_cutoff), zero-shot context
    max_train: int = 0  # at most this many training rows (seeded subsample)
    max_test: int = 0  # benchmark kinds: at most this many test rows (seeded subsample)
    grid: tuple[tuple[float, int], ...] = ()  # NT/GB: (lr, batch size) cells instead of the official grid
    epochs: int = 0  # benchmark kinds: finetune epochs instead of the protocol's

    def is_full(self) -> bool:
        return self == Scale()


@dataclass
class Task:
    """A resolved task: absolute paths, full recipe, metrics, and its version."""
    spec: TaskSpec
    recipe: Recipe
    metrics: list[str]
    files: dict[str, Path]  # role (train, valid, test, variants, fasta; a benchmark kind's data files) -> absolute path
    version: str
    scale: Scale = field(default_factory=Scale)
    data_dir: Path | None = None  # benchmark kinds: the task's directory under the suite's data_root

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> TaskKind:
        """How the task is read, run, scored and probed (evaluation/kinds/)."""
        return KINDS[self.spec.kind]

    def definition(self) -> dict:
        """What the version hashes (paths as written in the suite, so a moved checkout keeps its versions)."""
        spec = dataclasses.asdict(self.spec)
        spec.pop("recipe")
        spec.pop("description")
        if not spec["root"]:
            spec.pop("root")  # absent from the definitions written before it existed: their versions stay
        definition = {"task": spec, "recipe": dataclasses.asdict(self.recipe), "metrics": self.metrics}
        if not self.scale.is_full():
            definition["scale"] = dataclasses.asdict(self.scale)
        return definition


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    tasks: list[Task]
    published: Any = None  # benchmarks.published.Published, when the suite names a file

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"{self.path}: no task {name!r} (tasks: {[t.name for t in self.tasks]})")


def task_version(definition: dict, digests: dict[str, str]) -> str:
    payload = json.dumps({"definition": definition, "files": digests}, sort_keys=True)
    return "v1-" + hashlib.sha256(payload.encode()).hexdigest()[:12]


_DIGESTS: dict[tuple, str] = {}


def _digest(path: Path) -> str:
    """file_digest, once per process for an unchanged file (a benchmark's genome serves many tasks)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


def _resolve(spec: TaskSpec, index: int, default_recipe: dict, where: Path, data_root: Path,
             scale: Scale) -> Task:
    key = f"tasks[{index}]"
    if not spec.name:
        raise ConfigError(f"{where}: '{key}.name' is missing")
    if spec.kind not in KINDS:
        raise ConfigError(f"{where}: '{key}.kind' must be one of {sorted(KINDS)}, got {spec.kind!r}")
    kind = KINDS[spec.kind]
    recipe = build_section(Recipe, {**default_recipe, **spec.recipe}, f"{key}.recipe", str(where))
    needed = kind.check(spec, recipe, key, where)
    metrics = spec.metrics or kind.task_metrics(spec)
    for metric in metrics:
        if metric not in METRICS:
            raise ConfigError(f"{where}: '{key}.metrics' has unknown metric {metric!r} (known: {sorted(METRICS)})")
        if metric not in kind.metrics:
            raise ConfigError(f"{where}: '{key}.metrics': {metric} does not apply to kind {spec.kind} "
                              f"(it takes {list(kind.metrics)})")
    files: dict[str, Path] = {}
    for role in kind.roles:
        value = getattr(spec, role)
        if not value:
            if role in needed:
                raise ConfigError(f"{where}: '{key}.{role}' is missing (kind {spec.kind}, split {spec.split.rule})")
            continue
        path = Path(value) if Path(value).is_absolute() else (where.parent / value).resolve()
        if not path.exists():
            raise ConfigError(f"{where}: '{key}.{role}': {path} does not exist")
        files[role] = path
    data_dir = None
    if kind.reads_data_root:
        data_dir = data_root / (spec.root or kind.default_root(spec))
        try:
            files.update(kind.data_files(spec, data_dir))
        except ValueError as exc:
            raise ConfigError(f"{where}: '{key}' (data_root {data_root}): {exc}") from None
    task = Task(spec, recipe, list(metrics), files, "", scale, data_dir)
    digests = {role: _digest(path) for role, path in files.items()}
    task.version = task_version(task.definition(), digests)
    return task


def load_suite(path: str | Path, only: list[str] | None = None, data_root: str | Path | None = None,
               scale: Scale | None = None) -> Suite:
    """The suite at `path`: every entry checked, the tasks named in `only` (default all) resolved
    (files found and digested, versions computed); `data_root` replaces the file's data_root."""
    path = Path(path)
    raw = read_yaml_mapping(path, "suite", "with keys name, recipe, tasks")
    suite = build_section(SuiteFile, raw, "", str(path))
    build_section(Recipe, suite.recipe, "recipe", str(path))  # an unknown recipe key fails here, once
    if not suite.tasks:
        raise ConfigError(f"{path}: 'tasks' is empty")
    names = [t.name for t in suite.tasks]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{path}: task names must be unique; repeated: {duplicated}")
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ConfigError(f"{path}: no task {unknown[0]!r} (tasks: {names})")
    root = Path(data_root if data_root is not None else suite.data_root or ".").expanduser()
    root = root if root.is_absolute() or data_root is not None else path.resolve().parent / root
    tasks = [_resolve(spec, i, suite.recipe, path.resolve(), root.resolve(), scale or Scale())
             for i, spec in enumerate(suite.tasks) if only is None or spec.name in only]
    published = None
    if suite.published:
        from janus_pretrain.evaluation.benchmarks.published import load_published

        published = load_published(path.resolve().parent / suite.published)
    return Suite(suite.name or path.stem, suite.description, path.resolve(), tasks, published)
