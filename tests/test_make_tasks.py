"""data_prep/make_tasks.py on a small synthetic genome + GTF: labels sit where the annotation says,
no test window shares a base with a train window, reruns are byte-identical, and a bad GTF line
is an error naming the file and line."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from downstream_helpers import write_fasta
from janus_pretrain.evaluation.task_builder import read_rows

REPO = Path(__file__).resolve().parents[1]


def _genome(tmp_path: Path) -> tuple[Path, Path]:
    """Two contigs; genes every 1 kb with 3 exons, introns GT...AG, on both strands."""
    rng = random.Random(0)
    contigs, gtf = {}, []
    for name in ("c1", "c2"):
        seq = [rng.choice("ACGT") for _ in range(20000)]
        for g, gene_start in enumerate(range(500, 19000, 1000)):
            strand = "+" if g % 2 == 0 else "-"
            exons = [(gene_start, gene_start + 100), (gene_start + 200, gene_start + 300), (gene_start + 400, gene_start + 500)]
            for (_, a_end), (b_start, _) in zip(exons, exons[1:]):  # intron [a_end, b_start)
                left, right = ("GT", "AG") if strand == "+" else ("CT", "AC")
                seq[a_end:a_end + 2], seq[b_start - 2:b_start] = left, right
            tid = f"{name}_t{g}"
            gtf.append(f"{name}\tsim\tgene\t{gene_start + 1}\t{gene_start + 500}\t.\t{strand}\t.\tgene_id \"{tid}\";")
            gtf += [f"{name}\tsim\texon\t{s + 1}\t{e}\t.\t{strand}\t.\tgene_id \"{tid}\"; transcript_id \"{tid}\";"
                    for s, e in exons]
        contigs[name] = "".join(seq)
    fasta = write_fasta(tmp_path / "g.fa", list(contigs.items()))
    (tmp_path / "g.gtf").write_text("\n".join(gtf) + "\n")
    return fasta, tmp_path / "g.gtf"


def _make(fasta: Path, gtf: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "data_prep" / "make_tasks.py"), "--fasta", str(fasta), "--gtf", str(gtf),
           "--out", str(out), "--prefix", "sim", "--window", "100", "--splice-window", "40", "--max-per-class", "60",
           "--test-contigs", "c2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_tasks_have_correct_labels_disjoint_splits_and_are_reproducible(tmp_path):
    fasta, gtf = _genome(tmp_path)
    result = _make(fasta, gtf, tmp_path / "a")
    assert result.returncode == 0, result.stderr
    splice = {split: read_rows(tmp_path / "a" / f"sim_splice_{split}.tsv") for split in ("train", "valid", "test")}
    for rows in splice.values():
        for row in rows:
            if row.label == "donor":
                assert row.sequence[20:22] == "GT", row
            elif row.label == "acceptor":
                assert row.sequence[18:20] == "AG", row
    assert {r.label for r in splice["test"]} == {"donor", "acceptor", "decoy"}
    assert all(r.contig == "c2" for r in splice["test"])  # the held-out contig
    for task in ("splice", "region", "promoter"):
        parts = {s: read_rows(tmp_path / "a" / f"sim_{task}_{s}.tsv") for s in ("train", "valid", "test")}
        covered = {(r.contig, p) for r in parts["train"] for p in range(r.start, r.start + len(r.sequence))}
        for held in ("valid", "test"):
            assert not any((r.contig, p) in covered for r in parts[held] for p in range(r.start, r.start + len(r.sequence)))
    manifest = json.loads((tmp_path / "a" / "sim_region.json").read_text())
    assert set(manifest["splits"]["test"]["classes"]) == {"exon", "intron", "intergenic"}
    assert _make(fasta, gtf, tmp_path / "b").returncode == 0
    for path in (tmp_path / "a").glob("*.tsv"):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_bad_gtf_line_is_named(tmp_path):
    fasta, gtf = _genome(tmp_path)
    lines = gtf.read_text().splitlines()
    lines[3] = lines[3].replace("\t+\t", "\t?\t").replace("\t-\t", "\t?\t")
    gtf.write_text("\n".join(lines) + "\n")
    result = _make(fasta, gtf, tmp_path / "a")
    assert result.returncode == 2
    assert "g.gtf line 4, column 7: strand '?' is not + or -" in result.stderr
