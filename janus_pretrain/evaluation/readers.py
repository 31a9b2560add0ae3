"""Readers for the formats public DNA benchmarks ship in, all into one LabelledTable.

- TSV / CSV with a header (GUE and Nucleotide Transformer exports): downstream.tsv.
- Parquet (the NT / Hugging Face exports), through pyarrow: "row N" is the 1-based data row.
- Genomic Benchmarks layout: SPLIT_DIR/<class>/<id>.txt, one sequence per file; the class is
  the directory name.
- Zero-shot SNV: VCF (label in an INFO key) or TSV `chrom pos ref alt <label>` with a header,
  read by downstream.variants; labels are 0/1 (1 = the variant is expected to be deleterious).

Every problem is a TableError (or VariantError) naming the file, the line or row, and the column.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from janus_pretrain.downstream.tsv import LabelledTable, TableError, encode_labels, read_labelled_tsv
from janus_pretrain.downstream.variants import Variant, VariantError, read_variants
from janus_pretrain.tokenizer import first_invalid

TABLE_SUFFIXES = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def table_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    if path.is_dir():
        return "genomic_benchmarks"
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise TableError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; set the task's "
                         f"format to one of tsv, csv, parquet, genomic_benchmarks")
    return fmt


def _check_sequence(sequence: str, where: str, column: str) -> None:
    bad = first_invalid(sequence)
    if bad is not None:
        raise TableError(f"{where}, column '{column}': invalid DNA character {bad[1]!r} at position {bad[0] + 1}; "
                         f"expected A, C, G, T, N or IUPAC codes")


def read_parquet(path: Path, sequence_column: str, label_column: str) -> LabelledTable:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise TableError(f"{path}: not a readable Parquet file ({exc})") from None
    for column in (sequence_column, label_column):
        if column not in schema.names:
            raise TableError(f"{path}: no column '{column}' (columns: {schema.names}); choose the task's "
                             f"sequence_column / label_column")
    table = pq.read_table(path, columns=[sequence_column, label_column])
    sequences, labels = table.column(sequence_column).to_pylist(), table.column(label_column).to_pylist()
    out = LabelledTable(str(path), [], [], [])
    for row, (sequence, label) in enumerate(zip(sequences, labels), start=1):
        where = f"{path} row {row}"
        if not isinstance(sequence, str) or not sequence.strip():
            raise TableError(f"{where}, column '{sequence_column}': expected a non-empty string, got {sequence!r}")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise TableError(f"{where}, column '{label_column}': empty label")
        sequence = sequence.strip()
        _check_sequence(sequence, where, sequence_column)
        out.sequences.append(sequence)
        out.labels.append(str(label).strip())
        out.lines.append(row)
    if not out.sequences:
        raise TableError(f"{path}: no rows")
    return out


def read_genomic_benchmarks(split_dir: Path) -> LabelledTable:
    """SPLIT_DIR/<class>/*.txt (any file name), one sequence per file; files sorted by name."""
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if len(classes) < 1:
        raise TableError(f"{split_dir}: expected one sub-directory per class (Genomic Benchmarks layout "
                         f"SPLIT/<class>/<id>.txt), found none")
    out = LabelledTable(str(split_dir), [], [], [])
    for class_dir in classes:
        for path in sorted(p for p in class_dir.iterdir() if p.is_file()):
            lines = [line.strip() for line in path.read_text().splitlines()]
            content = [(i, line) for i, line in enumerate(lines, start=1) if line]
            if len(content) != 1:
                raise TableError(f"{path}: expected exactly one sequence line, found {len(content)} non-empty lines")
            line_no, sequence = content[0]
            _check_sequence(sequence, f"{path} line {line_no}", "sequence")
            out.sequences.append(sequence)
            out.labels.append(class_dir.name)
            out.lines.append(line_no)
    if not out.sequences:
        raise TableError(f"{split_dir}: no sequence files under the class directories")
    return out


def read_table(path: Path, fmt: str = "auto", sequence_column: str = "sequence",
               label_column: str = "label") -> LabelledTable:
    path = Path(path)
    fmt = table_format(path, fmt)
    if fmt in ("tsv", "csv"):
        return read_labelled_tsv(path, sequence_column, label_column, "\t" if fmt == "tsv" else ",")
    if fmt == "parquet":
        return read_parquet(path, sequence_column, label_column)
    if fmt == "genomic_benchmarks":
        if not path.is_dir():
            raise TableError(f"{path}: format genomic_benchmarks needs a split directory (SPLIT/<class>/<id>.txt)")
        return read_genomic_benchmarks(path)
    raise TableError(f"{path}: format {fmt!r} is not a sequence table format")


def regression_targets(table: LabelledTable, label_column: str = "label") -> np.ndarray:
    out = np.empty(len(table.labels), dtype=np.float64)
    for i, (label, line) in enumerate(zip(table.labels, table.lines)):
        try:
            out[i] = float(label)
        except ValueError:
            raise TableError(f"{table.path} line {line}, column '{label_column}': {label!r} is not a number "
                             f"(regression tasks need numeric labels)") from None
        if not np.isfinite(out[i]):
            raise TableError(f"{table.path} line {line}, column '{label_column}': {label!r} is not finite")
    return out


def classification_targets(table: LabelledTable, classes: list[str]) -> np.ndarray:
    return np.asarray(encode_labels(table, classes), dtype=np.int64)


_TRUE, _FALSE = {"1", "true", "yes", "pathogenic", "deleterious"}, {"0", "false", "no", "benign", "neutral"}


def read_snv_task(path: Path, label_column: str = "label") -> tuple[list[Variant], np.ndarray]:
    """Variants and their 0/1 labels; every variant must be a labelled single-base substitution."""
    variants = read_variants(path)
    if not variants:
        raise VariantError(f"{path}: no variants")
    labels = np.empty(len(variants), dtype=np.int64)
    for i, variant in enumerate(variants):
        if label_column not in variant.extra:
            raise VariantError(f"{variant.where}: no label '{label_column}' (VCF: an INFO key; TSV: a header column "
                               f"after alt); set the task's label_column")
        text = variant.extra[label_column].strip().lower()
        if text not in _TRUE | _FALSE:
            raise VariantError(f"{variant.where}, column '{label_column}': label {variant.extra[label_column]!r} "
                               f"is not 0/1 (or benign/pathogenic)")
        labels[i] = int(text in _TRUE)
    if labels.min() == labels.max():
        raise VariantError(f"{path}: every variant has label {labels[0]}; AUROC needs both classes")
    return variants, labels
