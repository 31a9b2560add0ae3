"""The three benchmark suites of the JanusDNA paper, as data and protocol pieces.

- `official`: every protocol value of the official scripts, with its source file:line at the
  official commit (the one home of these facts; docs/benchmarks.md prints its table).
- `nt`: Nucleotide Transformer downstream tasks as distributed (per task train/test, Parquet or
  FASTA with the label after the last '|' of each header).
- `genomic_benchmarks`: Genomic Benchmarks as its package writes them (class directories) or as
  its Parquet mirror (columns seq, label).
- `eqtl_files`, `eqtl_windows`: DNALongBench eQTL (per-tissue config and TSV, tabix file of other
  eQTL regions, hg38) and the TSS-to-variant windows built from them.
- `protocol`: validation splits cut from train with the run seed, the hyper-parameter choice on
  validation, mean +- std, left padding, reverse-complement conjoining, the per-batch metric mean.
- `published`: the published figures (configs/eval/published/*.yaml).

Readers return `downstream.tsv.LabelledTable` (labels are class indices as strings) so a task kind
can hand them to the harness; every bad row is a TableError naming file, row or line, and column.
"""
