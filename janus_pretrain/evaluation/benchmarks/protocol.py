"""Protocol pieces of the NT and Genomic Benchmarks suites, as the official runs apply them.

- validation split: per run seed, 10% of train held out, cut exactly as the official loaders cut it
  (NT: Hugging Face datasets' train_test_split; GB: torch random_split); not stratified. The
  "10-fold" / "5-fold cross-validation" of the official README is these 10 / 5 seeded splits
  against the fixed test split, not folds.
- choice of the hyper-parameter cell on validation, and mean +- std over seeds (rules the official
  code leaves out: official.FACTS "grid choice", "std").
- left padding, reverse-complement conjoining (mean of the two strands' logits), the training-time
  random strand, and the per-batch metric mean the official logs report.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from janus_pretrain.evaluation.task_builder import COMPLEMENT

SPLIT_RULES = ("hf_train_test_split", "torch_random_split")


@dataclass(frozen=True)
class Split:
    """Row indices into the distributed train split."""
    seed: int
    train: np.ndarray
    valid: np.ndarray


def hf_train_test_split(n: int, seed: int, valid_fraction: float = 0.1) -> Split:
    """datasets.Dataset.train_test_split(test_size=valid_fraction, seed=seed) on n rows: ceil(f n)
    rows of a numpy default_rng(seed) permutation are validation, the rest (in permutation order) train."""
    if not 0 < valid_fraction < 1 or n < 2:
        raise ValueError(f"need 0 < valid_fraction < 1 and at least 2 rows (got {valid_fraction}, {n})")
    n_valid = math.ceil(valid_fraction * n)
    permutation = np.random.default_rng(seed).permutation(n)
    return Split(seed, permutation[n_valid:], permutation[:n_valid])


def torch_random_split(n: int, seed: int, valid_fraction: float = 0.1) -> Split:
    """torch.utils.data.random_split(rows, [valid_fraction, 1 - valid_fraction],
    generator=torch.Generator().manual_seed(seed)): the first part is validation."""
    if not 0 < valid_fraction < 1 or n < 2:
        raise ValueError(f"need 0 < valid_fraction < 1 and at least 2 rows (got {valid_fraction}, {n})")
    valid, train = torch.utils.data.random_split(range(n), [valid_fraction, 1 - valid_fraction],
                                                 generator=torch.Generator().manual_seed(seed))
    return Split(seed, np.asarray(train.indices, dtype=np.int64), np.asarray(valid.indices, dtype=np.int64))


def validation_split(rule: str, n: int, seed: int, valid_fraction: float = 0.1) -> Split:
    """The split of official.FinetuneProtocol.split_rule for one run seed."""
    if rule not in SPLIT_RULES:
        raise ValueError(f"split rule {rule!r}: expected one of {SPLIT_RULES}")
    return (hf_train_test_split if rule == "hf_train_test_split" else torch_random_split)(n, seed, valid_fraction)


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float
    n: int
    ddof: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f}"


def mean_std(values: Iterable[float], ddof: int = 1) -> MeanStd:
    """Mean and standard deviation over seeds (ddof 1: the sample std; one value has std 0)."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        raise ValueError("mean_std of no values")
    std = float(array.std(ddof=ddof)) if array.size > ddof else 0.0
    return MeanStd(float(array.mean()), std, int(array.size), ddof)


@dataclass(frozen=True)
class GridCell:
    lr: float
    batch_size: int

    def __str__(self) -> str:
        return f"lr {self.lr:g}, batch {self.batch_size}"


@dataclass(frozen=True)
class RunScore:
    """One finetune run: its cell, seed, and metric on validation (at the chosen epoch) and test."""
    cell: GridCell
    seed: int
    valid: float
    test: float


@dataclass(frozen=True)
class GridChoice:
    rule: str
    cell: GridCell | None  # the chosen cell (rule cell_mean); None for per_seed, where each seed chooses
    valid: MeanStd
    test: MeanStd  # what is reported
    chosen: tuple[RunScore, ...]  # the runs the test figure is made of


CHOICE_RULES = ("cell_mean", "per_seed")


def choose_on_validation(runs: Sequence[RunScore], rule: str = "cell_mean", higher_is_better: bool = True,
                         ddof: int = 1) -> GridChoice:
    """Pick hyper-parameters on validation only, then report test mean +- std over seeds.

    cell_mean: the cell whose mean validation metric over the seeds is best (every cell must have run
    the same seeds); per_seed: for each seed the cell with the best validation metric. Ties go to the
    cell that comes first in `runs`.
    """
    if rule not in CHOICE_RULES:
        raise ValueError(f"choice rule {rule!r}: expected one of {CHOICE_RULES}")
    if not runs:
        raise ValueError("no runs to choose from")
    sign = 1.0 if higher_is_better else -1.0
    cells = list(dict.fromkeys(run.cell for run in runs))
    by_cell = {cell: [run for run in runs if run.cell == cell] for cell in cells}
    for cell, members in by_cell.items():
        seeds = [run.seed for run in members]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"cell {cell}: seed run twice ({sorted(seeds)})")
    if rule == "cell_mean":
        expected = {run.seed for run in by_cell[cells[0]]}
        for cell in cells:
            if {run.seed for run in by_cell[cell]} != expected:
                raise ValueError(f"cell {cell} ran seeds {sorted(run.seed for run in by_cell[cell])}, cell {cells[0]} "
                                 f"ran {sorted(expected)}: means over different seeds are not comparable")
        best = max(cells, key=lambda c: (sign * np.mean([r.valid for r in by_cell[c]]), -cells.index(c)))
        chosen = tuple(sorted(by_cell[best], key=lambda r: r.seed))
    else:
        best = None
        seeds = sorted({run.seed for run in runs})
        chosen = tuple(max((r for r in runs if r.seed == seed), key=lambda r: (sign * r.valid, -cells.index(r.cell)))
                       for seed in seeds)
    return GridChoice(rule, best, mean_std([r.valid for r in chosen], ddof), mean_std([r.test for r in chosen], ddof),
                      chosen)


def fit_left_padded(ids: Sequence[int] | np.ndarray, length: int, pad_id: int) -> np.ndarray:
    """Keep the first `length` ids (right truncation) and pad on the left to `length`."""
    ids = np.asarray(ids, dtype=np.int64)[:length]
    return np.concatenate([np.full(length - ids.size, pad_id, dtype=np.int64), ids])


def reverse_complement(sequence: str) -> str:
    """Reverse complement, upper case (A<->T, C<->G, N and other letters kept)."""
    return sequence.upper().translate(COMPLEMENT)[::-1]


def conjoined_inputs(sequence: str, length: int, encode: Callable[[str], Sequence[int]],
                     pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(forward, reverse-complement) model inputs as the official test loader makes them: the
    reverse complement of the whole sequence, each strand then truncated and left-padded alone."""
    return (fit_left_padded(encode(sequence), length, pad_id),
            fit_left_padded(encode(reverse_complement(sequence)), length, pad_id))


def conjoin_logits(forward: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
    """The official test prediction: the mean of the two strands' logits (not of probabilities)."""
    return (forward + reverse) / 2


def random_strand(sequence: str, rng: random.Random) -> str:
    """Training-time strand with conjoin_test on: reverse-complemented when rng.random() > 0.5."""
    return reverse_complement(sequence) if rng.random() > 0.5 else sequence


def batch_mean_metric(metric: Callable[[np.ndarray, np.ndarray], float], predictions: np.ndarray,
                      targets: np.ndarray, batch_size: int) -> float:
    """The metric as the official logs report it: computed per batch of `batch_size` rows (in order),
    averaged with the batch sizes as weights (Lightning's epoch mean of a per-step value)."""
    if batch_size < 1 or len(predictions) != len(targets) or len(targets) == 0:
        raise ValueError(f"need batch_size >= 1 and equal, non-empty predictions/targets "
                         f"({batch_size}, {len(predictions)}, {len(targets)})")
    values, weights = [], []
    for start in range(0, len(targets), batch_size):
        values.append(metric(predictions[start:start + batch_size], targets[start:start + batch_size]))
        weights.append(min(batch_size, len(targets) - start))
    return float(np.average(values, weights=weights))
