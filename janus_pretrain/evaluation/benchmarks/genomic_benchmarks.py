"""Genomic Benchmarks as its package writes them, and as the Parquet mirror on Hugging Face.

Package layout (genomic_benchmarks.loc2seq.download_dataset, ~/.genomic_benchmarks/<name>/):

    ROOT/train/<class>/<id>.txt, ROOT/test/<class>/<id>.txt   one sequence per file

Parquet mirror (katarinagresova/Genomic_Benchmarks_<name>):

    ROOT/data/train-00000-of-00001-<hash>.parquet, ROOT/data/test-...   columns seq (str), label (int)
    (the hub's converted copy: ROOT/default/<split>/*.parquet; a plain ROOT/<split>.parquet also works)

Both come back as a LabelledTable with class indices as labels. In the package layout the index
is the position of the class directory among the sorted directory names, which is how the
official loader numbers them (genomic_bench_dataset.py:70-71).
"""
from __future__ import annotations

from pathlib import Path

from janus_pretrain.downstream.tsv import LabelledTable, TableError
from janus_pretrain.evaluation.benchmarks.nt import check_class_labels, concatenate
from janus_pretrain.evaluation.readers import read_genomic_benchmarks, read_parquet

SPLITS = ("train", "test")


def class_names(split_dir: str | Path) -> list[str]:
    """The class directories of a package-layout split, in the official (sorted) order."""
    return sorted(p.name for p in Path(split_dir).iterdir() if p.is_dir())


def read_gb_package_split(split_dir: str | Path, classes: int | None = None) -> LabelledTable:
    """SPLIT/<class>/<id>.txt with the class names replaced by their sorted index."""
    split_dir = Path(split_dir)
    table = read_genomic_benchmarks(split_dir)
    names = class_names(split_dir)
    if classes is not None and len(names) != classes:
        raise TableError(f"{split_dir}: {len(names)} class directories {names}, the task has {classes} classes")
    index = {name: str(i) for i, name in enumerate(names)}
    table.labels = [index[label] for label in table.labels]
    return table


def read_gb_parquet(path: str | Path, classes: int | None = None) -> LabelledTable:
    """One mirror file: columns seq and label (an integer class index)."""
    return check_class_labels(read_parquet(Path(path), "seq", "label"), classes)


def gb_split_source(root: str | Path, split: str) -> tuple[str, list[Path]]:
    """('package', [split dir]) or ('parquet', files) for `split` of the task stored under `root`."""
    if split not in SPLITS:
        raise TableError(f"Genomic Benchmarks split {split!r}: expected one of {SPLITS} (validation is cut from train)")
    root = Path(root)
    if not root.is_dir():
        raise TableError(f"{root}: not a directory (expected a Genomic Benchmarks task: train/ and test/ class "
                         f"directories, or data/{split}-*.parquet)")
    split_dir = root / split
    if split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir()):
        return "package", [split_dir]
    for files in (sorted((root / "data").glob(f"{split}-*.parquet")), sorted((root / "default" / split).glob("*.parquet")),
                  [p for p in [root / f"{split}.parquet"] if p.is_file()]):
        if files:
            return "parquet", files
    raise TableError(f"{root}: no {split} split; looked for {split}/<class>/*.txt, data/{split}-*.parquet, "
                     f"default/{split}/*.parquet and {split}.parquet")


def read_gb_split(root: str | Path, split: str, classes: int | None = None) -> LabelledTable:
    """`split` ('train' or 'test') of the Genomic Benchmarks task stored under `root`, in either layout."""
    layout, files = gb_split_source(root, split)
    if layout == "package":
        return read_gb_package_split(files[0], classes)
    return concatenate([read_gb_parquet(p, classes) for p in files], files[0].parent)
