"""What an evaluation task kind is: the interface every kind implements, and the registry of kinds.

A kind owns everything that depends on what a task predicts:
  - its suite entry: which file roles it reads (TaskSpec fields), which it needs, which recipe
    and metrics apply (check);
  - reading: load(task) -> TaskData, once per suite run (folds of inputs and targets);
  - running: which models apply (not_applicable) and which are deterministic given the data
    (run once, seed null), and run(runner, task, data, model, seed) -> one record per fold with
    its valid and test metrics;
  - probing during pretraining: probe_data(task, limit) once at start, probe(...) every eval.every steps.
A kind subclasses TaskKind with a `name` (the suite's `kind:` value) in its own module of this
package; defining the class registers it. Inputs are kind-defined: DNA strings for the table
kinds, Variant records for zero_shot_snv, whatever a new kind reads (e.g. variant windows built
from coordinates and a FASTA). Metrics are named from downstream/task_metrics.py's METRICS.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np


class EvaluationError(ValueError):
    """A task that cannot be evaluated; the message names the task and what to fix."""


@dataclass
class Fold:
    train: tuple[list, np.ndarray]  # (inputs, targets)
    valid: tuple[list, np.ndarray]
    test: tuple[list, np.ndarray]


@dataclass
class TaskData:
    folds: list[Fold]
    classes: list[str] = field(default_factory=list)  # classification: class names in index order
    counts: dict[str, int] = field(default_factory=dict)  # rows per split (first fold), for results.json


def seeded_rows(count: int, limit: int, seed: int) -> list[int] | None:
    """The rows a seeded subsample of `limit` out of `count` keeps, in order; None: keep all."""
    if not limit or count <= limit:
        return None
    return sorted(random.Random(seed).sample(range(count), limit))


def capped(pair: tuple[list, np.ndarray], limit: int, seed: int) -> tuple[list, np.ndarray]:
    """(inputs, targets) subsampled to `limit` rows with seeded_rows."""
    rows = seeded_rows(len(pair[0]), limit, seed)
    if rows is None:
        return pair
    return [pair[0][i] for i in rows], pair[1][rows]


class Runner(Protocol):
    """What a suite run (evaluation/harness.py's SuiteRunner) offers a kind."""

    def model_for(self, name: str, seed: int | None): ...  # pretrained, or random init with that seed

    def cached(self, key: tuple, compute): ...  # compute() once per key (embeddings of a split)


KINDS: dict[str, "TaskKind"] = {}


class TaskKind:
    name: ClassVar[str] = ""  # the suite's `kind:` value; empty for shared bases
    roles: ClassVar[tuple[str, ...]] = ()  # TaskSpec file fields its tasks read
    metrics: ClassVar[tuple[str, ...]] = ()  # metrics that apply (task_metrics.METRICS names)
    default_metrics: ClassVar[tuple[str, ...]] = ()  # when the suite names none
    reads_data_root: ClassVar[bool] = False  # a benchmark kind: its files come from the suite's data_root (data_files)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            KINDS[cls.name] = cls()

    def __str__(self) -> str:
        return self.name

    # ---- the suite entry ----
    def check(self, spec, recipe, key: str, where) -> list[str]:
        """Raise ConfigError for a suite entry this kind cannot run; return the roles it must have."""
        raise NotImplementedError

    def task_metrics(self, spec) -> list[str]:
        """The metrics of a task whose suite entry names none."""
        return list(self.default_metrics)

    def default_root(self, spec) -> str:
        """A benchmark kind's directory for `spec` under the data root when the task names none."""
        return spec.name

    def data_files(self, spec, root) -> dict[str, Any]:
        """A benchmark kind's files under `root` by role (digested into the task version); raises
        ValueError naming what is missing."""
        return {}

    # ---- a suite run ----
    def load(self, task) -> TaskData:
        raise NotImplementedError

    def run_seeds(self, task, count: int | None) -> list[int]:
        """The run seeds for `count` (janus evaluate --seeds; None: the kind's default): 0..count-1, 3 by default."""
        return list(range(count or 3))

    def protocol_line(self, task) -> str:
        """One line for results.md saying how the task was run; empty: the report's recipe line."""
        return ""

    def finalise(self, task, runs: list[dict]) -> tuple[list[dict], dict]:
        """(the runs a result is made of, extra results.json entries) from every run of the task;
        a kind with a hyper-parameter grid chooses its cell here, on validation."""
        return runs, {}

    def not_applicable(self, model: str) -> str | None:
        """Why `model` (pretrained, random, kmer) does not apply to this kind, or None."""
        return None

    def deterministic(self, model: str, recipe) -> bool:
        """Whether `model`'s result is a function of the data alone (run once, seed null)."""
        return False

    def run(self, runner: Runner, task, data: TaskData, model: str, seed: int | None, bar=None) -> list[dict]:
        """One record per fold: {"valid": metrics, "test": metrics, "chosen": {...}, ...}."""
        raise NotImplementedError

    # ---- probes during pretraining (evaluation/pretraining_probes.py) ----
    def probe_data(self, task, limit: int) -> Any:
        """What probe() needs, read once at the start of training (`limit` rows per split)."""
        raise NotImplementedError

    def probe(self, task, data: Any, module, device, is_main: bool) -> dict[str, float]:
        """Metrics of the training model on the task, keyed without the probe/<task>/ prefix;
        every rank runs the same forwards (expert parallelism), only rank 0 need return values."""
        raise NotImplementedError
