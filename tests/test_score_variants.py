"""Zero-shot SNV scoring: hand-computed scores from a model whose logits we control, 1-based
positions, centred windows, the no-leak property on a real model, and bad inputs."""
from __future__ import annotations

import gzip
import os
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from downstream_helpers import random_dna, small_export, small_model, write_fasta
from janus_pretrain.downstream.variants import (Variant, VariantError, centred_window, read_variants, score_variants,
                                                write_scores)
from janus_pretrain.tokenizer import A_ID, C_ID, G_ID, T_ID, encode

REPO = Path(__file__).resolve().parents[1]
# 1-based:  1234567890123456789012345678901234567890
CONTIG = "GATTACACCGTAGGCTTAACGTGCAT" * 2  # 52 bp
BASE_AT = {A_ID: "A", C_ID: "C", G_ID: "G", T_ID: "T"}


class NeighbourModel(torch.nn.Module):
    """logits[p, b] = 1 if b is the base left of p, + 2 if b is the base right of p, else 0.
    Like the Janus read-out it never looks at position p itself. Records the windows it saw."""

    def __init__(self):
        super().__init__()
        self.windows = []

    def forward(self, ids):  # (B, L)
        self.windows += [row.clone() for row in ids]
        logits = torch.zeros(*ids.shape, 16)
        logits[:, 1:].scatter_add_(-1, ids[:, :-1, None], torch.ones(ids.shape[0], ids.shape[1] - 1, 1))
        logits[:, :-1].scatter_add_(-1, ids[:, 1:, None], 2 * torch.ones(ids.shape[0], ids.shape[1] - 1, 1))
        return SimpleNamespace(logits=logits)


def _expected(pos1: int, ref: str, alt: str) -> float:
    """By hand: the four base logits at 1-based pos from its neighbours, log-softmax, alt - ref."""
    left = CONTIG[pos1 - 2] if pos1 > 1 else None
    right = CONTIG[pos1] if pos1 < len(CONTIG) else None
    logit = {b: (b == left) * 1.0 + (b == right) * 2.0 for b in "ACGT"}
    log_z = math.log(sum(math.exp(v) for v in logit.values()))
    return (logit[alt] - log_z) - (logit[ref] - log_z)


@pytest.fixture
def fasta(tmp_path):
    return write_fasta(tmp_path / "ref.fa", [("chrX", CONTIG), ("chrY", random_dna(30, seed=2))])


def test_hand_computed_scores_with_one_based_positions(fasta):
    # pos 4 is the T of GATTACA (left T, right A); pos 5 is A (left T, right C)
    variants = [Variant("chrX", 4, "T", "A", "t"), Variant("chrX", 4, "T", "G", "t"), Variant("chrX", 5, "A", "C", "t"),
                Variant("chrX", 1, "G", "T", "t"), Variant("chrX", 52, "T", "C", "t")]
    rows = score_variants(NeighbourModel(), fasta, variants, window=11)
    assert [r["status"] for r in rows] == ["ok"] * 5
    for row, v in zip(rows, variants):
        assert row["score"] == pytest.approx(_expected(v.pos, v.ref, v.alt), abs=1e-6), v
    # the first one by hand: logits A=2 (right), T=1 (left), C=G=0 -> score = 2 - 1 = 1
    assert rows[0]["score"] == pytest.approx(1.0)
    assert rows[0]["logp_ref"] == pytest.approx(1 - math.log(math.exp(2) + math.exp(1) + 2))


def test_windows_are_centred_and_clipped_at_contig_ends(fasta):
    model = NeighbourModel()
    score_variants(model, fasta, [Variant("chrX", 26, "T", "A", "t")], window=11)
    (window,) = model.windows
    assert "".join(BASE_AT[int(i)] for i in window) == CONTIG[25 - 5:25 + 6]  # 0-based 25 in the middle
    assert centred_window(0, 52, 11) == (0, 11) and centred_window(51, 52, 11) == (41, 52)
    assert centred_window(5, 8, 11) == (0, 8)  # contig shorter than the window: all of it


def test_batching_and_shared_windows_do_not_change_scores(fasta):
    model = small_model()
    variants = [Variant("chrX", p, CONTIG[p - 1], alt, "t") for p in (3, 9, 17, 30, 44, 50) for alt in "ACGT"
                if alt != CONTIG[p - 1]]
    one = score_variants(model, fasta, variants, window=24, batch_size=1)
    many = score_variants(model, fasta, variants, window=24, batch_size=7)
    for a, b in zip(one, many):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_real_model_scores_from_ref_window_equal_alt_window(fasta):
    """The Janus read-out at p never sees base p: scoring from the REF window is the same as
    reading the ALT window at p. A model that leaked base p would fail this."""
    model = small_model()
    variant = Variant("chrX", 20, CONTIG[19], "G", "t")
    (row,) = score_variants(model, fasta, [variant], window=24)
    start, _ = centred_window(19, len(CONTIG), 24)
    alt_window = CONTIG[start:19] + "G" + CONTIG[20:start + 24]
    with torch.no_grad():
        logits = model(encode(alt_window)[None]).logits[0, 19 - start]
    logp = torch.log_softmax(logits[[A_ID, C_ID, G_ID, T_ID]], -1)
    assert row["score"] == pytest.approx(float(logp[2] - logp["ACGT".index(variant.ref)]), abs=1e-5)
    assert row["score"] != 0.0


def test_vcf_and_tsv_parsing(tmp_path):
    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=chrX>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   "chrX\t4\trs1\tT\tA,G\t.\t.\t.\nchrX\t7\t.\tAC\tA\t.\t.\t.\n")
    variants = read_variants(vcf)
    assert [(v.chrom, v.pos, v.ref, v.alt) for v in variants] == [("chrX", 4, "T", "A"), ("chrX", 4, "T", "G"),
                                                                 ("chrX", 7, "AC", "A")]
    assert "line 4" in variants[0].where
    tsv = tmp_path / "v.tsv"
    tsv.write_text("chrom\tpos\tref\talt\nchrX\t5\ta\tc\n")
    assert [(v.pos, v.ref, v.alt) for v in read_variants(tsv)] == [(5, "A", "C")]


def test_bad_inputs_have_clear_errors(fasta, tmp_path):
    model = NeighbourModel()
    with pytest.raises(VariantError, match=r"position 53 is outside contig 'chrX' \(length 52"):
        score_variants(model, fasta, [Variant("chrX", 53, "A", "C", "v.tsv line 3")], window=11)
    with pytest.raises(VariantError, match="v.tsv line 2: contig 'chr9' is not in"):
        score_variants(model, fasta, [Variant("chr9", 5, "A", "C", "v.tsv line 2")], window=11)
    bad = tmp_path / "bad.tsv"
    bad.write_text("chrX\t0\tA\tC\n")
    with pytest.raises(VariantError, match="line 1: position 0 < 1"):
        read_variants(bad)
    bad.write_text("chrX\tfive\tA\tC\n")
    with pytest.raises(VariantError, match="line 1: position 'five' is not an integer"):
        read_variants(bad)


def test_ref_mismatch_is_reported_not_scored(fasta, tmp_path):
    variants = [Variant("chrX", 5, "G", "C", "v line 1"),  # the FASTA has A at 5
                Variant("chrX", 5, "A", "C", "v line 2"), Variant("chrX", 6, "CA", "C", "v line 3")]
    rows = score_variants(NeighbourModel(), fasta, variants, window=11)
    assert rows[0]["status"] == "ref_mismatch:fasta=A" and math.isnan(rows[0]["score"])
    assert rows[1]["status"] == "ok" and rows[2]["status"] == "not_snv"
    with pytest.raises(VariantError, match="v line 1: REF G does not match the FASTA base A at chrX:5"):
        score_variants(NeighbourModel(), fasta, variants, window=11, on_ref_mismatch="error")
    text = write_scores(rows, tmp_path / "s.tsv").read_text().splitlines()
    assert text[0].split("\t") == ["chrom", "pos", "ref", "alt", "score", "logp_ref", "logp_alt", "status"]
    assert text[1].split("\t")[4] == "NA" and text[1].endswith("ref_mismatch:fasta=A")


def test_cli_end_to_end(tmp_path, fasta):
    _, export = small_export(tmp_path)
    vcf = tmp_path / "in.vcf"
    vcf.write_text("#CHROM\tPOS\tID\tREF\tALT\nchrX\t10\t.\tG\tT\nchrX\t11\t.\tC\tT\n")
    out = tmp_path / "scores.tsv"
    cmd = [sys.executable, str(REPO / "launch" / "score_variants.py"), "--model", str(export), "--fasta", str(fasta),
           "--variants", str(vcf), "--out", str(out), "--window", "16"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[1].startswith("chrX\t10\tG\tT\t") and lines[1].endswith("\tok")
    assert lines[2].endswith("ref_mismatch:fasta=T") and "1 ref_mismatch" in result.stdout
    gz = tmp_path / "ref.fa.gz"  # plain gzip: scored from a cached plain copy, identically
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    gz_out = tmp_path / "scores_gz.tsv"
    gz_cmd = cmd[:5] + [str(gz)] + cmd[6:9] + [str(gz_out), "--window-bp", "16"]
    env = {**os.environ, "JANUS_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(gz_cmd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert gz_out.read_text() == out.read_text()
    assert len(list((tmp_path / "cache").glob("*.fa"))) == 1


def test_an_empty_vcf_is_one_line_not_a_header_only_result(tmp_path, capsys):
    """Issue 27, silent 8: a VCF with headers only (or nothing) is refused, exit 2 and one line."""
    from janus_pretrain.commands.score_variants import main

    vcf = tmp_path / "empty.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    with pytest.raises(VariantError, match="empty.vcf: no variant lines"):
        read_variants(vcf)
    out = tmp_path / "scores.tsv"
    assert main(["--model", str(tmp_path / "no_export"), "--fasta", str(tmp_path / "no.fa"), "--variants", str(vcf),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no variant lines" in err[0] and not out.exists(), err
