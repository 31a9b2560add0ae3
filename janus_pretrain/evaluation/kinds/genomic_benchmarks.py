"""kind: genomic_benchmarks. A Genomic Benchmarks task (official.GB_TASKS) read as the
genomic-benchmarks package writes it or from its Parquet mirror (benchmarks/genomic_benchmarks.py)
and run with the official GB protocol (sequence_benchmark.py: 5 seeds, lr x batch grid, left
padding, strand conjoining; accuracy). The task's root defaults to the task name under the data root."""
from __future__ import annotations

from janus_pretrain.evaluation.benchmarks import official
from janus_pretrain.evaluation.benchmarks.genomic_benchmarks import gb_split_source, read_gb_split
from janus_pretrain.evaluation.kinds.sequence_benchmark import SequenceBenchmark


class GenomicBenchmarks(SequenceBenchmark):
    name = "genomic_benchmarks"
    suite = "gb"
    protocol = official.GB_PROTOCOL

    def split_files(self, root, split: str) -> list:
        return gb_split_source(root, split)[1]

    def read_split(self, task, split: str, classes: int):
        return read_gb_split(task.data_dir, split, classes)
