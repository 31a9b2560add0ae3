"""kind: nt. A Nucleotide Transformer downstream task (official.NT_TASKS) read from the downloaded
Hugging Face dataset (benchmarks/nt.py: Parquet or FASTA) and run with the official NT protocol
(sequence_benchmark.py: 10 seeds, lr x batch grid, left padding, strand conjoining; MCC, F1 of
class 1 or accuracy per task). The task's root defaults to the task name under the data root."""
from __future__ import annotations

from janus_pretrain.evaluation.benchmarks import official
from janus_pretrain.evaluation.benchmarks.nt import nt_split_files, read_nt_split
from janus_pretrain.evaluation.kinds.sequence_benchmark import SequenceBenchmark


class NucleotideTransformer(SequenceBenchmark):
    name = "nt"
    suite = "nt"
    protocol = official.NT_PROTOCOL

    def split_files(self, root, split: str) -> list:
        return nt_split_files(root.parent, root.name, split)

    def read_split(self, task, split: str, classes: int):
        return read_nt_split(task.data_dir.parent, task.data_dir.name, split, classes)
