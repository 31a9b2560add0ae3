"""Labelled sequence tables (TSV with a header: sequence, label, ...) and their fixed splits.

Errors name the file, the line and the column, so a user can fix the table without guessing.
"""
from __future__ import annotations

import csv
import io
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from janus_pretrain.atomic_io import read_text, temporary_path
from janus_pretrain.tokenizer import first_invalid


# csv refuses fields over 131,072 characters by default, but a sequence column holds windows of 300 kbp
# and more (DNALongBench): the limit is process-wide, raised once here for every table reader
csv.field_size_limit(2 ** 31 - 1)


class TableError(ValueError):
    """A labelled table that cannot be used; the message names file, line and column."""


@dataclass
class LabelledTable:
    path: str
    sequences: list[str]
    labels: list[str]
    lines: list[int]  # 1-based line number of each row in the file (header is line 1)


def read_labelled_tsv(path: str | Path, sequence_column: str = "sequence", label_column: str = "label",
                      delimiter: str = "\t") -> LabelledTable:
    """Rows of a tab-separated (or, with delimiter ",", comma-separated) table with a header naming
    `sequence_column` and `label_column`."""
    path = Path(path)
    with io.StringIO(read_text(path, TableError, f"{path}: file not found"), newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise TableError(f"{path}: empty file; expected a header line with columns "
                             f"'{sequence_column}' and '{label_column}'")
        header = [h.strip() for h in header]
        for column in (sequence_column, label_column):
            if column not in header:
                raise TableError(f"{path} line 1: no column '{column}' in header {header} "
                                 f"(choose columns with --sequence-column / --label-column)")
        seq_at, label_at = header.index(sequence_column), header.index(label_column)
        table = LabelledTable(str(path), [], [], [])
        for line_no, row in _numbered(reader, path):
            if not row or all(not field.strip() for field in row):
                continue
            if len(row) != len(header):
                raise TableError(f"{path} line {line_no}: {len(row)} fields, header has {len(header)}")
            sequence, label = row[seq_at].strip(), row[label_at].strip()
            if not sequence:
                raise TableError(f"{path} line {line_no}: empty sequence")
            if not label:
                raise TableError(f"{path} line {line_no}: empty label")
            bad = first_invalid(sequence)
            if bad is not None:
                raise TableError(f"{path} line {line_no}, column '{sequence_column}': invalid DNA character "
                                 f"{bad[1]!r} at position {bad[0] + 1}; expected A, C, G, T, N or IUPAC codes")
            table.sequences.append(sequence)
            table.labels.append(label)
            table.lines.append(line_no)
    if not table.sequences:
        raise TableError(f"{path}: no data rows after the header")
    return table


def _numbered(reader, path: Path):
    """(line number, row) after the header; a row csv cannot parse is a TableError naming its line."""
    try:
        yield from ((reader.line_num, row) for row in reader)
    except csv.Error as exc:
        raise TableError(f"{path} line {reader.line_num}: {exc}") from None


def encode_labels(table: LabelledTable, classes: list[str]) -> list[int]:
    """Class indices; a label not among `classes` (those seen in training) is an error naming the line."""
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for label, line_no in zip(table.labels, table.lines):
        if label not in index:
            raise TableError(f"{table.path} line {line_no}: label {label!r} does not occur in the training set "
                             f"(classes: {classes})")
        out.append(index[label])
    return out


def _write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    tmp = temporary_path(path)
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def stratified_split(path: str | Path, out_prefix: str | Path, fractions=(0.8, 0.1, 0.1), seed: int = 0,
                     sequence_column: str = "sequence", label_column: str = "label") -> dict[str, int]:
    """Split a labelled TSV into {prefix}_train/valid/test.tsv, per class, seeded; rows keep their text.

    Rows with the same sequence stay together (the UCI splice set repeats 125 sequences; split
    apart they would leak test rows into training). Groups are stratified by their first row's
    label: each class is shuffled with random.Random(seed) and cut at the cumulative fractions.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    header, body = rows[0], [r for r in rows[1:] if r]
    for column in (sequence_column, label_column):
        if column not in header:
            raise TableError(f"{path} line 1: no column '{column}' in header {header}")
    seq_at, label_at = header.index(sequence_column), header.index(label_column)
    groups: dict[str, list[list[str]]] = {}
    for row in body:
        groups.setdefault(row[seq_at].upper(), []).append(row)
    by_class: dict[str, list[list[list[str]]]] = defaultdict(list)
    for members in groups.values():
        by_class[members[0][label_at]].append(members)
    rng = random.Random(seed)
    splits: dict[str, list[list[str]]] = {"train": [], "valid": [], "test": []}
    for label in sorted(by_class):
        class_groups = by_class[label]
        rng.shuffle(class_groups)
        n_train = round(fractions[0] * len(class_groups))
        n_valid = round(fractions[1] * len(class_groups))
        for name, part in (("train", class_groups[:n_train]), ("valid", class_groups[n_train:n_train + n_valid]),
                           ("test", class_groups[n_train + n_valid:])):
            splits[name] += [row for members in part for row in members]
    counts = {}
    for name, members in splits.items():
        rng.shuffle(members)  # classes interleaved, not in blocks
        _write_rows(Path(f"{out_prefix}_{name}.tsv"), header, members)
        counts[name] = len(members)
    return counts


def _subset(table: LabelledTable, rows: list[int], suffix: str) -> LabelledTable:
    rows = sorted(rows)  # file order: the split changes membership, never the order within a part
    return LabelledTable(f"{table.path} ({suffix})", [table.sequences[i] for i in rows],
                         [table.labels[i] for i in rows], [table.lines[i] for i in rows])


def _grouped_by_class(table: LabelledTable, stratify: bool, seed: int) -> list[list[list[int]]]:
    """Row groups (identical sequences together, so no sequence sits on both sides of a split),
    per class when stratifying, each class's groups shuffled with random.Random(seed)."""
    groups: dict[str, list[int]] = {}
    for i, sequence in enumerate(table.sequences):
        groups.setdefault(sequence.upper(), []).append(i)
    by_class: dict[str, list[list[int]]] = defaultdict(list)
    for members in groups.values():
        by_class[table.labels[members[0]] if stratify else ""].append(members)
    rng = random.Random(seed)
    out = []
    for label in sorted(by_class):
        rng.shuffle(by_class[label])
        out.append(by_class[label])
    return out


def split_valid(table: LabelledTable, fraction: float, seed: int = 0,
                stratify: bool = True) -> tuple[LabelledTable, LabelledTable]:
    """(train, valid): about `fraction` of the rows of each class held out for validation, seeded."""
    train, valid = [], []
    for groups in _grouped_by_class(table, stratify, seed):
        n_valid = max(1, round(fraction * len(groups))) if len(groups) > 1 else 0
        valid += [i for members in groups[:n_valid] for i in members]
        train += [i for members in groups[n_valid:] for i in members]
    if not valid or not train:
        raise TableError(f"{table.path}: too few rows ({len(table.sequences)}) to hold out a validation fraction "
                         f"of {fraction}")
    return _subset(table, train, "train part"), _subset(table, valid, "valid part")


def kfold(table: LabelledTable, folds: int, seed: int = 0, stratify: bool = True) -> list[tuple[LabelledTable, LabelledTable]]:
    """[(rest, fold)] for each of `folds` folds: stratified, seeded, identical sequences in one fold."""
    assignment: list[list[int]] = [[] for _ in range(folds)]
    for groups in _grouped_by_class(table, stratify, seed):
        for j, members in enumerate(groups):
            assignment[j % folds] += members
    if any(not fold for fold in assignment):
        raise TableError(f"{table.path}: too few rows ({len(table.sequences)}) for {folds} folds")
    every = set(range(len(table.sequences)))
    return [(_subset(table, sorted(every - set(fold)), f"folds except {k}"), _subset(table, fold, f"fold {k}"))
            for k, fold in enumerate(assignment)]
