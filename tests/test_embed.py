"""Embeddings: per-position states equal the backbone's on each window, the mean is their mean,
the npz layout, and FASTA errors that say what to do."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from downstream_helpers import random_dna, small_export, small_model, write_fasta
from janus_pretrain.downstream.embedding import embed_fasta, embed_ids, window_starts
from janus_pretrain.downstream.indexed_fasta import FastaError
from janus_pretrain.tokenizer import encode

REPO = Path(__file__).resolve().parents[1]


def test_states_equal_the_backbone_on_each_window():
    backbone = small_model().backbone
    ids = encode(random_dna(70, seed=3))
    states = embed_ids(backbone, ids, window=32, batch_size=2)  # windows [0,32) [32,64) [64,70)
    assert states.shape == (70, backbone.config.d_model)
    with torch.no_grad():
        for start, end in window_starts(70, 32):
            alone = backbone(ids[start:end][None]).hidden_states[0]
            torch.testing.assert_close(states[start:end], alone, rtol=1e-5, atol=1e-5)
        # one window covering everything is the plain forward pass; windows really cut the context
        whole = backbone(ids[None]).hidden_states[0]
    torch.testing.assert_close(embed_ids(backbone, ids, window=100), whole, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(states[:32], whole[:32], atol=1e-4)


def test_embed_fasta_mean_and_per_position(tmp_path):
    backbone = small_model().backbone
    records = [("a", random_dna(50, seed=1)), ("b", random_dna(23, seed=2).lower()), ("c", "ACGTNNNNACGT")]
    fasta = write_fasta(tmp_path / "in.fa", records)
    emb = embed_fasta(backbone, fasta, window=20, per_position=True)
    assert emb.names == ["a", "b", "c"] and emb.lengths == [50, 23, 12]
    for (name, seq), mean, states in zip(records, emb.mean, emb.states):
        assert states.shape == (len(seq), backbone.config.d_model)
        np.testing.assert_allclose(mean, states.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(states, embed_ids(backbone, encode(seq), window=20).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(emb.mean[0], emb.mean[1], atol=1e-4)


def test_cli_writes_npz(tmp_path):
    _, export = small_export(tmp_path)
    fasta = write_fasta(tmp_path / "in.fa", [("x", random_dna(40, seed=4)), ("y", random_dna(9, seed=5))])
    out = tmp_path / "emb.npz"
    cmd = [sys.executable, str(REPO / "launch" / "embed.py"), "--model", str(export), "--fasta", str(fasta),
           "--out", str(out), "--window", "16"]
    result = subprocess.run(cmd + ["--per-position"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with np.load(out) as data:
        assert list(data["names"]) == ["x", "y"] and list(data["lengths"]) == [40, 9]
        assert data["mean"].shape == (2, 16)
        assert data["states_0"].shape == (40, 16) and data["states_1"].shape == (9, 16)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # means only
    with np.load(out) as data:
        assert "states_0" not in data.files


def test_gzip_fasta_reads_through_a_cached_plain_copy(tmp_path, monkeypatch):
    """Plain gzip cannot be indexed: it is decompressed once into the FASTA cache and embeds exactly
    like the plain file; the second run reuses the copy; a damaged gzip is one clear error."""
    monkeypatch.setenv("JANUS_CACHE_DIR", str(tmp_path / "cache"))
    backbone = small_model().backbone
    records = [("a", random_dna(30, seed=7)), ("b", random_dna(11, seed=8).lower())]
    plain = write_fasta(tmp_path / "in.fa", records)
    gz = tmp_path / "in.fa.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    want = embed_fasta(backbone, plain, window=16, per_position=True)
    got = embed_fasta(backbone, gz, window=16, per_position=True)
    assert got.names == want.names and got.lengths == want.lengths
    for a, b in zip(got.states, want.states):
        np.testing.assert_array_equal(a, b)
    copies = sorted((tmp_path / "cache").glob("*.fa"))
    assert len(copies) == 1 and copies[0].read_text().split() == [">a", records[0][1], ">b", records[1][1]]
    stamp = copies[0].stat().st_mtime_ns
    embed_fasta(backbone, gz, window=16)
    assert copies[0].stat().st_mtime_ns == stamp  # reused, not rewritten
    broken = tmp_path / "broken.fa.gz"
    broken.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(FastaError, match="broken.fa.gz.*corrupt"):
        embed_fasta(backbone, broken)


def test_fasta_errors(tmp_path):
    backbone = small_model().backbone
    bad = write_fasta(tmp_path / "bad.fa", [("ok", "ACGT"), ("weird", "ACGTXACGT")])
    with pytest.raises(FastaError, match="record 'weird'.*'X' at position 4"):
        embed_fasta(backbone, bad)
    with pytest.raises(FastaError, match="not found"):
        embed_fasta(backbone, tmp_path / "missing.fa")
