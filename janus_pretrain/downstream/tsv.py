"""Labelled sequence tables (TSV with a header: sequence, label, ...) and their fixed splits.

Errors name the file, the line and the column, so a user can fix the table without guessing.
"""
from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from janus_pretrain.atomic_io import temporary_path
from janus_pretrain.tokenizer import first_invalid


class TableError(ValueError):
    """A labelled table that cannot be used; the message names file, line and column."""


@dataclass
class LabelledTable:
    path: str
    sequences: list[str]
    labels: list[str]
    lines: list[int]  # 1-based line number of each row in the file (header is line 1)


def read_labelled_tsv(path: str | Path, sequence_column: str = "sequence", label_column: str = "label") -> LabelledTable:
    """Rows of a tab-separated table with a header naming `sequence_column` and `label_column`."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    with path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
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
        for line_no, row in enumerate(reader, start=2):
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
