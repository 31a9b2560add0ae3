"""data_prep/make_tasks.py on a small synthetic genome + GTF: labels sit where the annotation says,
no test window shares a base with a train window, reruns are byte-identical, and a bad GTF line
is an error naming the file and line."""
from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

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


def _with_cds(gtf: Path) -> dict[str, tuple[str, list[tuple[int, int]]]]:
    """Add CDS lines (every exon fully coding: 300 bases, 100 codons, spliced across the exons) to
    the synthetic GTF; returns {transcript: (strand, exons 0-based)}."""
    lines, transcripts = gtf.read_text().splitlines(), {}
    for line in list(lines):
        fields = line.split("\t")
        if fields[2] != "exon":
            continue
        tid = fields[8].split('transcript_id "')[1].split('"')[0]
        transcripts.setdefault(tid, (fields[6], []))[1].append((int(fields[3]) - 1, int(fields[4])))
    for tid, (strand, exons) in transcripts.items():
        done = 0
        for start, end in (exons if strand == "+" else exons[::-1]):
            frame = (3 - done % 3) % 3
            lines.append(f"{tid.split('_')[0]}\tsim\tCDS\t{start + 1}\t{end}\t.\t{strand}\t{frame}\t"
                         f"gene_id \"{tid}\"; transcript_id \"{tid}\";")
            done += end - start
    gtf.write_text("\n".join(lines) + "\n")
    return transcripts


def test_codon_snv_variants_are_missense_or_synonymous_as_labelled_and_only_in_the_test_block(tmp_path):
    from janus_pretrain.evaluation.codon_variants import translate
    from janus_pretrain.evaluation.readers import read_snv_task

    codons = ["".join(c) for c in itertools.product("ACGT", repeat=3)]
    assert [translate(c) for c in ("ATG", "TGG", "GCA", "TAA", "TAG", "TGA")] == list("MWA***")
    assert sum(translate(c) == "*" for c in codons) == 3 and len({translate(c) for c in codons}) == 21
    fasta, gtf = _genome(tmp_path)
    transcripts = _with_cds(gtf)
    result = _make(fasta, gtf, tmp_path / "a", "--tasks", "codon_snv")
    assert result.returncode == 0, result.stderr
    table = tmp_path / "a" / "sim_codon_snv_test.tsv"
    variants, labels = read_snv_task(table)  # the file janus evaluate reads for zero_shot_snv tasks
    assert len(variants) == 120 and labels.sum() == 60  # balanced, capped by --max-per-class
    text = fasta.read_text().split(">")[1:]
    genome = {chunk.split("\n", 1)[0].split()[0]: chunk.split("\n", 1)[1].replace("\n", "") for chunk in text}
    complement = str.maketrans("ACGT", "TGCA")
    coding = {}  # (contig, position) -> (codon, index in codon, strand), from the exons directly
    for tid, (strand, exons) in transcripts.items():
        contig = tid.split("_")[0]
        positions = [p for s, e in exons for p in range(s, e)]
        positions = positions if strand == "+" else positions[::-1]
        for i, p in enumerate(positions):
            codon = "".join(genome[contig][q] for q in positions[i - i % 3:i - i % 3 + 3])
            coding[(contig, p)] = (codon if strand == "+" else codon.translate(complement), i % 3, strand)
    for variant, label in zip(variants, labels):
        assert variant.chrom == "c2"  # --test-contigs c2: only held-out bases are labelled
        codon, index, strand = coding[(variant.chrom, variant.pos - 1)]
        assert genome["c2"][variant.pos - 1] == variant.ref and variant.alt != variant.ref
        alt = variant.alt if strand == "+" else variant.alt.translate(complement)
        changed = codon[:index] + alt + codon[index + 1:]
        if label == 1:
            assert index == 1 and translate(changed) not in (translate(codon), "*"), (variant, codon)
        else:
            assert index == 2 and {translate(codon[:2] + b) for b in "ACGT"} == {translate(codon)}, (variant, codon)
        assert variant.extra["kind"] == ("missense" if label == 1 else "synonymous")
    assert _make(fasta, gtf, tmp_path / "b", "--tasks", "codon_snv").returncode == 0
    assert (tmp_path / "b" / "sim_codon_snv_test.tsv").read_bytes() == table.read_bytes()


def test_the_shipped_zero_shot_suite_loads_and_every_ref_base_matches_its_genome():
    """configs/eval/zero_shot.yaml as janus evaluate reads it (scoring a variant whose REF differs
    from the FASTA would stop the run): both classes present, every REF the genome's base."""
    from janus_pretrain.evaluation.readers import read_snv_task
    from janus_pretrain.evaluation.registry import load_suite
    from janus_pretrain.evaluation.task_files import read_genome

    suite = load_suite(REPO / "configs" / "eval" / "zero_shot.yaml")
    assert [t.kind.name for t in suite.tasks] == ["zero_shot_snv"] * 2
    for task in suite.tasks:
        variants, labels = read_snv_task(task.files["variants"])
        genome, _ = read_genome(task.files["fasta"])
        assert len(variants) == 800 and labels.sum() == 400
        assert all(genome[v.chrom][v.pos - 1].upper() == v.ref != v.alt for v in variants), task.name


def test_a_gtf_cut_mid_line_is_named_by_file_and_line(tmp_path):
    """Issue 27, silent 8: cut inside column 9, the last line still has nine columns."""
    from janus_pretrain.evaluation.annotation import AnnotationError, read_gtf

    _, gtf = _genome(tmp_path)
    text = gtf.read_text()
    cut = text.rstrip("\n").rfind('transcript_id "') + len('transcript_id "T')
    gtf.write_text(text[:cut])
    lines = gtf.read_text().count("\n") + 1
    with pytest.raises(AnnotationError, match=rf"g.gtf line {lines}: the last line has no newline: the file was cut"):
        read_gtf(gtf)
