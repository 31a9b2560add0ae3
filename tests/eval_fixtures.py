"""Small evaluation suites written into a test directory: a motif classification task (label =
whether the sequence holds GATA, so a k-mer model must solve it), a regression task (label = GC
fraction) and a zero-shot SNV task over a plain FASTA."""
from __future__ import annotations

import random
from pathlib import Path

from downstream_helpers import write_fasta


def motif_rows(n: int, length: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        seq = "".join(rng.choice("ACT") for _ in range(length))  # no G: GATA only where planted
        if i % 2:
            at = rng.randrange(0, length - 4)
            seq = seq[:at] + "GATA" + seq[at + 4:]
        rows.append((seq, "motif" if i % 2 else "none"))
    return rows


def write_table(path: Path, rows: list[tuple[str, str]], sep: str = "\t") -> Path:
    path.write_text(f"sequence{sep}label\n" + "".join(f"{s}{sep}{label}\n" for s, label in rows))
    return path


def write_suite(directory: Path, n: int = 60, length: int = 32, zero_shot: bool = True, head: str = "probe",
                regression: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, seed in (("train", 1), ("valid", 2), ("test", 3)):
        write_table(directory / f"motif_{split}.tsv", motif_rows(n, length, seed))
    tasks = ["  - name: motif\n    kind: classification\n    train: motif_train.tsv\n    valid: motif_valid.tsv\n"
             "    test: motif_test.tsv\n    metrics: [accuracy, mcc, auroc]\n"]
    if regression:
        rng = random.Random(4)
        rows = []
        for _ in range(n * 2):
            gc = rng.random()
            seq = "".join(rng.choice("GC") if rng.random() < gc else rng.choice("AT") for _ in range(length))
            rows.append((seq, f"{(seq.count('G') + seq.count('C')) / length:.4f}"))
        write_table(directory / "gc.csv", rows[:int(1.5 * n)], sep=",")
        write_table(directory / "gc_test.csv", rows[int(1.5 * n):], sep=",")
        tasks.append("  - name: gc\n    kind: regression\n    train: gc.csv\n    test: gc_test.csv\n"
                     "    split: {rule: valid_fraction, valid_fraction: 0.2, seed: 0}\n")
    if zero_shot:
        rng = random.Random(5)
        genome = "".join(rng.choice("ACGT") for _ in range(400))
        write_fasta(directory / "ref.fa", [("chrT", genome)])
        lines = ["chrom\tpos\tref\talt\tlabel"]
        for i, pos in enumerate(range(20, 380, 12)):
            ref = genome[pos - 1]
            alt = next(b for b in "ACGT" if b != ref)
            lines.append(f"chrT\t{pos}\t{ref}\t{alt}\t{i % 2}")
        (directory / "snv.tsv").write_text("\n".join(lines) + "\n")
        tasks.append("  - name: snv\n    kind: zero_shot_snv\n    variants: snv.tsv\n    fasta: ref.fa\n"
                     "    recipe: {window: 64}\n")
    recipe = "recipe: {head: %s, batch_size: 16, epochs: 2, lr: 3.0e-3, probe_c: [0.1, 1.0], kmer_k: [2, 4]}\n" % head
    suite = directory / "suite.yaml"
    suite.write_text("name: test\n" + recipe + "tasks:\n" + "".join(tasks))
    return suite
