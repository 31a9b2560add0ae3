"""Nucleotide Transformer downstream tasks as the Hugging Face dataset distributes them.

A snapshot of InstaDeepAI/nucleotide_transformer_downstream_tasks (or `_revised`), as
`huggingface-cli download --repo-type dataset` or a git clone leaves it, holds per task

    ROOT/<task>/train.parquet, test.parquet   columns sequence, name, label (int), task
    ROOT/<task>/train.fna, test.fna           FASTA, header '>NAME|LABEL' (label after the last '|')

and the hub's converted copy has ROOT/<task>/<split>/*.parquet. The official loader reads the
FASTA form through the dataset's loading script; the Parquet files carry the same rows. Labels
come back as class indices ("0", "1", ...) in a LabelledTable; `lines` are 1-based Parquet rows
or the FASTA header's line number.
"""
from __future__ import annotations

from pathlib import Path

from janus_pretrain.atomic_io import text_lines
from janus_pretrain.downstream.tsv import LabelledTable, TableError
from janus_pretrain.evaluation.readers import _check_sequence, read_parquet

SPLITS = ("train", "test")
FASTA_SUFFIXES = (".fna", ".fa", ".fasta")


def check_class_labels(table: LabelledTable, classes: int | None, column: str = "label",
                       unit: str = "row") -> LabelledTable:
    """Every label must be an integer in [0, classes); written back as its plain decimal form.
    `unit` names what `table.lines` count ('row' for Parquet, 'line' for text files)."""
    for i, (label, line) in enumerate(zip(table.labels, table.lines)):
        text = label.strip()
        if not text.lstrip("-").isdigit():
            raise TableError(f"{table.path} {unit} {line}, column '{column}': label {label!r} is not an integer class index")
        value = int(text)
        if value < 0 or (classes is not None and value >= classes):
            allowed = f"0..{classes - 1} (the task has {classes} classes)" if classes is not None else "0 or more"
            raise TableError(f"{table.path} {unit} {line}, column '{column}': label {value} is not in {allowed}")
        table.labels[i] = str(value)
    return table


def concatenate(tables: list[LabelledTable], path: Path) -> LabelledTable:
    """The rows of sharded files as one table; rows are numbered through (each shard names itself in
    errors raised while reading it)."""
    if len(tables) == 1:
        return tables[0]
    out = LabelledTable(str(path), [], [], [])
    for part in tables:
        out.lines += [len(out.sequences) + line for line in part.lines]
        out.sequences += part.sequences
        out.labels += part.labels
    return out


def read_nt_parquet(path: str | Path, task: str | None = None, classes: int | None = None) -> LabelledTable:
    """One NT split file. With `task`, a 'task' column (present in the current files) must name it."""
    path = Path(path)
    table = read_parquet(path, "sequence", "label")
    if task is not None:
        import pyarrow.parquet as pq

        if "task" in pq.read_schema(path).names:
            for row, value in enumerate(pq.read_table(path, columns=["task"]).column("task").to_pylist(), start=1):
                if value != task:
                    raise TableError(f"{path} row {row}, column 'task': {value!r}, expected {task!r} "
                                     f"(is this the file of another task?)")
    return check_class_labels(table, classes)


def read_nt_fasta(path: str | Path, classes: int | None = None) -> LabelledTable:
    """NT FASTA: '>NAME|LABEL' headers, sequence on the following lines (joined)."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    table = LabelledTable(str(path), [], [], [])
    header, header_line, parts = None, 0, []

    def finish() -> None:
        sequence = "".join(parts)
        if not sequence:
            raise TableError(f"{path} line {header_line}: record '{header}' has no sequence")
        name, bar, label = header.rpartition("|")
        if not bar or not label.strip():
            raise TableError(f"{path} line {header_line}, column 'label': header '>{header}' has no '|LABEL' at its end")
        table.sequences.append(sequence)
        table.labels.append(label.strip())
        table.lines.append(header_line)

    for line_no, line in text_lines(path, TableError):
        line = line.strip()
        if line.startswith(">"):
            if header is not None:
                finish()
            header, header_line, parts = line[1:], line_no, []
        elif line:
            if header is None:
                raise TableError(f"{path} line {line_no}: sequence before the first '>' header")
            _check_sequence(line, f"{path} line {line_no}", "sequence")
            parts.append(line)
    if header is None:
        raise TableError(f"{path}: no FASTA records")
    finish()
    return check_class_labels(table, classes, unit="line")


def nt_split_files(root: str | Path, task: str, split: str) -> list[Path]:
    """The file(s) holding `split` of `task` under a dataset snapshot `root` (Parquet preferred)."""
    if split not in SPLITS:
        raise TableError(f"NT split {split!r}: expected one of {SPLITS} (validation is cut from train)")
    base = Path(root) / task
    if not base.is_dir():
        known = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
        raise TableError(f"{base}: no directory for task {task!r} under {root} (found: {known[:20]})")
    candidates = [base / f"{split}.parquet", *sorted((base / split).glob("*.parquet")),
                  *[base / f"{split}{suffix}" for suffix in FASTA_SUFFIXES]]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise TableError(f"{base}: no {split} split; looked for {split}.parquet, {split}/*.parquet, {split}.fna")
    if found[0].suffix == ".parquet":
        return [p for p in found if p.suffix == ".parquet" and (p.parent == base) == (found[0].parent == base)]
    return found[:1]


def read_nt_split(root: str | Path, task: str, split: str, classes: int | None = None) -> LabelledTable:
    """`split` ('train' or 'test') of NT `task` from a dataset snapshot, labels checked against `classes`."""
    files = nt_split_files(root, task, split)
    tables = [read_nt_parquet(p, task, classes) if p.suffix == ".parquet" else read_nt_fasta(p, classes) for p in files]
    return concatenate(tables, files[0].parent)
