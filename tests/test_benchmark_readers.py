"""Nucleotide Transformer and Genomic Benchmarks in their distributed layouts (fixtures made by
tests/make_benchmark_fixtures.py), and one error per kind of bad row naming file, row/line, column."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from janus_pretrain.downstream.tsv import TableError
from janus_pretrain.evaluation.benchmarks import official
from janus_pretrain.evaluation.benchmarks.genomic_benchmarks import gb_split_source, read_gb_split
from janus_pretrain.evaluation.benchmarks.nt import nt_split_files, read_nt_fasta, read_nt_parquet, read_nt_split

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmarks"
NT = FIXTURES / "nt"


def rows(table):
    return list(zip(table.sequences, table.labels))


def test_nt_parquet_and_fasta_forms_hold_the_same_rows():
    h3 = official.task("nt", "H3")
    parquet = read_nt_split(NT, "H3", "train", h3.classes)
    fasta = read_nt_fasta(NT / "H3" / "train.fna", h3.classes)
    assert rows(parquet) == rows(fasta) and len(parquet.sequences) == 20
    assert {len(s) for s in parquet.sequences} == {h3.max_length} and set(parquet.labels) == {"0", "1"}
    assert fasta.lines[:3] == [1, 3, 5] and parquet.lines[:3] == [1, 2, 3]
    assert set(read_nt_split(NT, "enhancers_types", "test", 3).labels) == {"0", "1", "2"}


def test_nt_prefers_parquet_and_reads_the_converted_shard_layout(tmp_path):
    assert nt_split_files(NT, "H3", "test") == [NT / "H3" / "test.parquet"]
    shards = tmp_path / "H3" / "train"
    shards.mkdir(parents=True)
    table = pq.read_table(NT / "H3" / "train.parquet")
    pq.write_table(table.slice(0, 12), shards / "0000.parquet")
    pq.write_table(table.slice(12), shards / "0001.parquet")
    joined = read_nt_split(tmp_path, "H3", "train", 2)
    assert rows(joined) == rows(read_nt_split(NT, "H3", "train", 2)) and joined.lines[12] == 13
    (tmp_path / "H3" / "test.fna").write_text((NT / "H3" / "test.fna").read_text())
    assert nt_split_files(tmp_path, "H3", "test") == [tmp_path / "H3" / "test.fna"]


def _write(path: Path, **changes) -> Path:
    table = pq.read_table(NT / "H3" / "train.parquet").to_pydict()
    for column, (row, value) in changes.items():
        table[column][row] = value
    pq.write_table(pa.table(table), path)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"label": (4, 2)}, r"row 5, column 'label': label 2 is not in 0..1 \(the task has 2 classes\)"),
    ({"task": (6, "H4")}, r"row 7, column 'task': 'H4', expected 'H3'"),
    ({"sequence": (2, "ACGT?")}, r"row 3, column 'sequence': invalid DNA character '\?' at position 5"),
])
def test_nt_parquet_bad_rows(tmp_path, changes, message):
    with pytest.raises(TableError, match=message):
        read_nt_parquet(_write(tmp_path / "train.parquet", **changes), "H3", 2)


def test_nt_parquet_float_label_is_an_error(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"sequence": ["ACGT", "ACGA"], "label": [0.0, 1.5]}), path)
    with pytest.raises(TableError, match=r"row 1, column 'label': label '0.0' is not an integer class index"):
        read_nt_parquet(path, None, 2)


@pytest.mark.parametrize("text, message", [
    (">a|0\nACGT\n>b\nACGT\n", r"line 3, column 'label': header '>b' has no '\|LABEL'"),
    (">a|0\nACGT\n>b|x\nACGT\n", r"line 3, column 'label': label 'x' is not an integer"),
    (">a|0\nACGT\nAC-T\n", r"line 3, column 'sequence': invalid DNA character '-'"),
    ("ACGT\n>a|0\nACGT\n", r"line 1: sequence before the first '>' header"),
    (">a|0\n>b|1\nACGT\n", r"line 1: record 'a\|0' has no sequence"),
    (">a|5\nACGT\n", r"line 1, column 'label': label 5 is not in 0..1"),
])
def test_nt_fasta_bad_records(tmp_path, text, message):
    path = tmp_path / "train.fna"
    path.write_text(text)
    with pytest.raises(TableError, match=rf"{path} {message}"):
        read_nt_fasta(path, 2)


def test_nt_fasta_joins_wrapped_sequence_lines(tmp_path):
    path = tmp_path / "x.fna"
    path.write_text(">chr1:1-9|1\nACGTA\nCGTA\n\n>chr1:9-12|0\nGGG\n")
    table = read_nt_fasta(path, 2)
    assert rows(table) == [("ACGTACGTA", "1"), ("GGG", "0")] and table.lines == [1, 5]


def test_nt_missing_task_or_split_is_named(tmp_path):
    with pytest.raises(TableError, match=r"no directory for task 'H9' .*found: \['H3', 'enhancers_types'\]"):
        nt_split_files(NT, "H9", "train")
    (tmp_path / "H3").mkdir()
    with pytest.raises(TableError, match=r"no test split; looked for test.parquet, test/\*.parquet, test.fna"):
        nt_split_files(tmp_path, "H3", "test")
    with pytest.raises(TableError, match="validation is cut from train"):
        nt_split_files(NT, "H3", "valid")


def test_gb_package_and_parquet_layouts_agree():
    task = official.task("gb", "human_nontata_promoters")
    package_root, parquet_root = FIXTURES / "gb_package" / task.name, FIXTURES / "gb" / task.name
    assert gb_split_source(package_root, "train")[0] == "package"
    assert gb_split_source(parquet_root, "train")[0] == "parquet"
    for split in ("train", "test"):
        package, parquet = read_gb_split(package_root, split, task.classes), read_gb_split(parquet_root, split, task.classes)
        assert sorted(rows(package)) == sorted(rows(parquet)) and {len(s) for s in package.sequences} == {251}
    # the package numbers classes by their sorted directory names: negative = 0, positive = 1
    positive = (package_root / "train" / "positive" / "1.txt").read_text()
    assert dict(rows(read_gb_split(package_root, "train")))[positive] == "1"


def test_gb_bad_rows_and_layouts(tmp_path):
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"seq": ["ACGT", "ACGT"], "label": [1, 3]}), path)
    with pytest.raises(TableError, match=r"train-00000-of-00001.parquet row 2, column 'label': label 3 is not in 0..1"):
        read_gb_split(tmp_path, "train", 2)
    pq.write_table(pa.table({"sequence": ["ACGT"], "label": [1]}), path)
    with pytest.raises(TableError, match=r"no column 'seq'"):
        read_gb_split(tmp_path, "train", 2)
    with pytest.raises(TableError, match=r"no test split; looked for test/<class>/\*.txt, data/test-\*.parquet"):
        read_gb_split(tmp_path, "test")
    shutil.copytree(FIXTURES / "gb_package" / "human_nontata_promoters", tmp_path / "pkg")
    with pytest.raises(TableError, match=r"2 class directories \['negative', 'positive'\], the task has 3 classes"):
        read_gb_split(tmp_path / "pkg", "train", 3)
