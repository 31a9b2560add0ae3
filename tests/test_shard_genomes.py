"""data_prep/shard_genomes.py: splits, sample contents, determinism, refusals and every bad input."""
from __future__ import annotations

import gzip
import json
import logging
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from data_fixtures import (BUNDLED_WINDOW, BUNDLED_YAML, REPO, all_samples, bundled_manifest,  # noqa: F401
                           bundled_shards, read_genome, shard, shard_samples, write_fasta, write_genomes_yaml)
from janus_pretrain.data import read_manifest
from janus_pretrain.tokenizer import normalise_bases


def random_dna(n: int, seed: int, alphabet: str = "ACGTacgt") -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """Two species: IUPAC codes, lower case, an N block, a held-out contig, a short last window."""
    d = tmp_path_factory.mktemp("synthetic")
    n_block = random_dna(3000, 1) + "N" * 1500 + random_dna(2500, 2)  # 7,000 bp
    write_fasta(d / "a.fa.gz", [("chr1.1", random_dna(9000, 3) + "RYKMSWbdhv" + random_dna(990, 4)),
                                ("chr2", n_block), ("chrM", random_dna(2500, 5))])
    write_fasta(d / "b.fa", [("only", random_dna(12345, 6))])
    write_genomes_yaml(d, [
        {"name": "a", "fasta": "a.fa.gz", "weight": 2.0, "test_contigs": ["chrM"], "valid_fraction": 0.1},
        {"name": "b", "fasta": "b.fa", "valid_fraction": 0.1, "test_fraction": 0.1}])
    return d


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "data_prep" / "shard_genomes.py"), *args],
                          capture_output=True, text=True, cwd=REPO)


def test_cli_entry_point_shards_and_writes_manifest(synthetic, tmp_path):
    result = run_cli("--genomes", str(synthetic / "genomes.yaml"), "--out", str(tmp_path / "o"), "--window-bp", "1000")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["window_bp"] == 1000 and manifest["tokenizer_version"]
    assert "--window-bp 1000" in manifest["command"]
    assert set(manifest["input_sha256"]) == {"a", "b"}
    assert "gzip" in result.stderr  # the log says how the gzip input was read


def test_samples_are_the_genome_windows_case_kept_iupac_to_n(synthetic, tmp_path):
    assert shard(synthetic / "genomes.yaml", tmp_path / "o", 1000, "--max-n-frac", "1.0") == 0
    manifest = read_manifest(tmp_path / "o")
    genomes = {"a": read_genome(synthetic / "a.fa.gz"), "b": read_genome(synthetic / "b.fa")}
    keys = set()
    for split, key, dna, meta in all_samples(manifest):
        source = genomes[meta["species"]][meta["contig"]][meta["start"]:meta["end"]]
        assert dna == normalise_bases(source.encode())
        assert meta["n_frac"] == pytest.approx(sum(c in "Nn" for c in dna.decode()) / len(dna), abs=1e-6)
        assert meta["softmasked_frac"] == pytest.approx(sum(c.islower() for c in dna.decode()) / len(dna), abs=1e-6)
        assert meta["source_sha256"] == manifest["input_sha256"][meta["species"]]
        keys.add(key)
    assert len(keys) == len(all_samples(manifest))  # keys unique
    chunk = [d for _, k, d, m in all_samples(manifest) if m["contig"] == "chr1.1" and m["start"] == 9000][0]
    assert chunk[:10] == b"NNNNNNnnnn"  # RYKMSW -> N, bdhv -> n: ambiguity normalised, case kept


def test_splits_never_overlap_and_cover_the_genome(synthetic, tmp_path):
    assert shard(synthetic / "genomes.yaml", tmp_path / "o", 1000, "--max-n-frac", "1.0", "--min-window-bp", "1") == 0
    intervals = defaultdict(list)
    for split, _, _, meta in all_samples(read_manifest(tmp_path / "o")):
        intervals[(meta["species"], meta["contig"])].append((meta["start"], meta["end"], split))
    genome_a = read_genome(synthetic / "a.fa.gz")
    for (species, contig), spans in intervals.items():
        spans.sort()
        for (s0, e0, _), (s1, _, _) in zip(spans, spans[1:]):
            assert e0 <= s1, f"overlapping windows on {species}/{contig}"
        if species == "a":  # every base in exactly one window when nothing is dropped
            assert spans[0][0] == 0 and spans[-1][1] == len(genome_a[contig])
            assert all(e0 == s1 for (_, e0, _), (s1, _, _) in zip(spans, spans[1:]))
    assert {s for _, _, s in intervals[("a", "chrM")]} == {"test"}  # held-out contig, whole
    order = [s for _, _, s in intervals[("b", "only")]]
    assert order == sorted(order, key=["train", "valid", "test"].index)  # blocks at the contig's end


def test_n_filter_and_short_tail_counts(synthetic, tmp_path):
    assert shard(synthetic / "genomes.yaml", tmp_path / "o", 1000, "--max-n-frac", "0.5", "--min-window-bp", "400") == 0
    manifest = read_manifest(tmp_path / "o")
    samples = all_samples(manifest)
    assert samples and all(meta["n_frac"] <= 0.5 for _, _, _, meta in samples)
    # chr2: N in [3000, 4500) -> windows 3000-4000 (100% N) and 4000-5000 (50%, kept): one dropped
    train_a = manifest["species"]["a"]["splits"]["train"]
    assert train_a["dropped"]["n_frac_above_max"] == 1
    # b: 12,345 bp, 1,234 test + 1,234 valid at the end; train 9,877 -> tail 877 kept; valid tail 234 dropped
    b = manifest["species"]["b"]["splits"]
    assert b["train"]["samples"] == 10 and b["train"]["bp"] == 9877
    assert b["valid"]["dropped"]["tail_below_min_window_bp"] == 1


def test_rerun_is_byte_identical_and_skips_done_shards(synthetic, tmp_path):
    args = (synthetic / "genomes.yaml", tmp_path / "o", 700, "--shard-size-mb", "0.003")
    assert shard(*args) == 0
    files = {p: p.read_bytes() for p in (tmp_path / "o").rglob("*.tar")}
    files[tmp_path / "o" / "manifest.json"] = (tmp_path / "o" / "manifest.json").read_bytes()
    assert len([p for p in files if "train" in str(p)]) > 3
    victim = sorted(p for p in files if p.suffix == ".tar")[1]
    victim.unlink()
    (tmp_path / "o" / "manifest.json").unlink()
    keep = sorted(p for p in files if p.suffix == ".tar")[0]
    before = keep.stat().st_mtime_ns
    assert shard(*args) == 0
    assert keep.stat().st_mtime_ns == before  # a finished shard is skipped, not rewritten
    assert {p: p.read_bytes() for p in files} == files
    assert shard(*args) == 0  # complete: nothing to do
    assert (tmp_path / "o" / "manifest.json").read_bytes() == files[tmp_path / "o" / "manifest.json"]
    # more workers, same shards
    assert shard(synthetic / "genomes.yaml", tmp_path / "w", 700, "--shard-size-mb", "0.003", "--workers", "2") == 0
    for p, data in files.items():
        if p.suffix == ".tar":
            assert (tmp_path / "w" / p.relative_to(tmp_path / "o")).read_bytes() == data


def test_rerun_verifies_shards_and_rebuilds_exactly_the_damaged_ones(synthetic, tmp_path, caplog):
    out = tmp_path / "o"
    args = (synthetic / "genomes.yaml", out, 700, "--shard-size-mb", "0.003")
    assert shard(*args) == 0
    tars = sorted(out.rglob("*.tar"))
    files = {p: p.read_bytes() for p in tars}
    manifest = (out / "manifest.json").read_bytes()
    for round_, extra in enumerate([(), ("--workers", "2")]):  # complete directory, then an interrupted one
        deleted, truncated, flipped = tars[3 * round_:3 * round_ + 3]
        deleted.unlink()
        truncated.write_bytes(files[truncated][:2048])
        flipped.write_bytes(files[flipped][:1000] + bytes([files[flipped][1000] ^ 1]) + files[flipped][1001:])
        orphans = [out / "train" / ".a-000099.tar.tmp4242", out / "valid" / "b-000000.tar.tmp77",
                   out / ".state" / "parts" / "train" / ".x.json.tmp9", out / ".cache" / "b-0123.fa.tmp5"]
        for orphan in orphans:
            orphan.parent.mkdir(parents=True, exist_ok=True)
            orphan.write_bytes(b"half-written by a killed run")
        if round_ == 1:
            (out / "manifest.json").unlink()  # killed before the manifest: shards checked against .state/parts
        untouched = {p: p.stat().st_mtime_ns for p in tars if p not in (deleted, truncated, flipped)}
        caplog.clear()
        assert shard(*args, *extra) == 0
        assert {p: p.read_bytes() for p in tars} == files  # rebuilt byte-identical
        rewritten = json.loads((out / "manifest.json").read_text())
        assert {**rewritten, "command": ""} == {**json.loads(manifest), "command": ""}  # (--workers is in it)
        assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # nothing else rewritten
        assert not any(orphan.exists() for orphan in orphans)
        if not extra:  # (the workers of --workers 2 log in their own processes)
            assert f"{deleted}: missing; rebuilding it" in caplog.text and "truncated" in caplog.text
            assert "sha256 differs" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert shard(*args) == 0
    assert f"{len(tars)} shards match their sha256" in caplog.text


def test_different_arguments_into_non_empty_dir_refused(synthetic, tmp_path, capsys):
    assert shard(synthetic / "genomes.yaml", tmp_path / "o", 1000) == 0
    manifest = (tmp_path / "o" / "manifest.json").read_bytes()
    assert shard(synthetic / "genomes.yaml", tmp_path / "o", 2000) != 0
    assert "window_bp: 1000 -> 2000" in capsys.readouterr().err
    assert (tmp_path / "o" / "manifest.json").read_bytes() == manifest
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert shard(synthetic / "genomes.yaml", tmp_path / "other", 1000) != 0
    assert "not empty" in capsys.readouterr().err


def test_crlf_input_accepted_same_shards(tmp_path):
    seq = random_dna(5000, 7)
    for name, newline in (("lf", "\n"), ("crlf", "\r\n")):
        (tmp_path / name).mkdir()
        write_fasta(tmp_path / name / "g.fa", [("c1", seq)], newline=newline)
        write_genomes_yaml(tmp_path / name, [{"name": "g", "fasta": "g.fa"}])
        assert shard(tmp_path / name / "genomes.yaml", tmp_path / name / "out", 1000) == 0
    lf, crlf = (shard_samples(tmp_path / f"{name}/out/train/g-000000.tar") for name in ("lf", "crlf"))
    assert len(lf) == 5 and [(k, d) for k, d, _ in lf] == [(k, d) for k, d, _ in crlf]


def test_empty_contig_skipped_with_warning(tmp_path, caplog):
    (tmp_path / "g.fa").write_text(">empty\n>full\n" + random_dna(3000, 8) + "\n")
    write_genomes_yaml(tmp_path, [{"name": "g", "fasta": "g.fa"}])
    assert shard(tmp_path / "genomes.yaml", tmp_path / "out", 1000) == 0
    manifest = read_manifest(tmp_path / "out")
    assert manifest["species"]["g"]["contigs"] == 1
    assert "empty" in manifest["species"]["g"]["warnings"][0] and "g.fa:1" in caplog.text


def _bad(tmp_path: Path, case: str) -> tuple[Path, int, tuple[str, ...]]:
    """(genomes.yaml, window, substrings the error must contain) for one bad input."""
    good = random_dna(3000, 9)
    fasta = tmp_path / "g.fa"
    species = [{"name": "g", "fasta": "g.fa"}]
    window = 1000
    if case == "missing_file":
        species[0]["fasta"] = "nope.fa"
        expect = ("nope.fa", "genomes.yaml:2")
    elif case == "not_fasta":
        fasta.write_text("just some text\nACGT\n")
        expect = ("g.fa:1", "not FASTA")
    elif case == "truncated_gzip":
        fasta = tmp_path / "g.fa.gz"
        fasta.write_bytes(gzip.compress((">c\n" + good + "\n").encode() * 20)[:-200])
        species[0]["fasta"] = "g.fa.gz"
        expect = ("g.fa.gz", "truncated")
    elif case == "empty_file":
        fasta.write_bytes(b"")
        expect = ("g.fa", "empty")
    elif case == "duplicate_contigs":
        write_fasta(fasta, [("c1", good), ("c2", good), ("c1", good)])
        expect = ("g.fa:103", "duplicate contig name 'c1'", "line 1")
    elif case in ("digit", "star", "dash"):
        char = {"digit": "7", "star": "*", "dash": "-"}[case]
        write_fasta(fasta, [("c1", good), ("c2", good[:130] + char + good[131:])])
        expect = ("g.fa:55", repr(char), "contig 'c2'", "column 11")
    elif case == "window_too_large":
        write_fasta(fasta, [("c1", good), ("c2", good[:2000])])
        window = 5000
        expect = ("g.fa", "larger than every contig", "'c1'")
    elif case in ("nan_weight", "inf_fraction"):
        write_fasta(fasta, [("c1", good)])
        key = {"nan_weight": "weight", "inf_fraction": "valid_fraction"}[case]
        species[0][key] = float("nan") if case == "nan_weight" else float("inf")
        expect = ("genomes.yaml:2", f"'{key}' must be a finite number")
    elif case == "numeric_contig":
        write_fasta(fasta, [("1.10", good), ("c2", good)])
        species[0]["valid_contigs"] = [1.10]  # YAML reads it back as the float 1.1, not the contig '1.10'
        expect = ("genomes.yaml:2", "'valid_contigs' entry 1.1 is a float", "quote it")
    elif case == "non_ascii_name":
        write_fasta(fasta, [("c1", good), ("chr\u00e92", good)])
        expect = ("g.fa:52", "non-ASCII", "rename the contig")
    elif case == "species_twice":
        write_fasta(fasta, [("c1", good)])
        species.append({"name": "g", "fasta": "g.fa"})
        expect = ("genomes.yaml:4", "'g' listed twice", "line 2")
    else:
        raise AssertionError(case)
    return write_genomes_yaml(tmp_path, species), window, expect


BAD_CASES = ["missing_file", "not_fasta", "truncated_gzip", "empty_file", "duplicate_contigs", "digit", "star",
             "dash", "window_too_large", "species_twice", "nan_weight", "inf_fraction", "numeric_contig",
             "non_ascii_name"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_a_clear_error_and_no_manifest(tmp_path, capsys, case):
    genomes, window, expect = _bad(tmp_path, case)
    out = tmp_path / "out"
    assert shard(genomes, out, window) != 0
    err = capsys.readouterr().err
    for text in expect:
        assert text in err, f"{case}: {text!r} not in {err!r}"
    assert not (out / "manifest.json").exists()
    assert not out.exists() or not any(out.iterdir())  # nothing half-made left behind


def test_bundled_genomes_shard_with_every_species(bundled_manifest):
    order = bundled_manifest["species_order"]
    assert set(order) == {"scer", "skud", "smik", "dmel", "lambda", "hsap_chrM"}
    for name in order:
        entry = bundled_manifest["species"][name]
        assert entry["splits"]["train"]["samples"] > 0
        assert entry["compression"] in ("gzip", "bgzip")
    dmel = bundled_manifest["species"]["dmel"]
    assert dmel["splits"]["train"]["dropped"]["n_frac_above_max"] > 0  # the N runs of chr4
    assert len(dmel["splits"]["train"]["shards"]) > 4
    assert bundled_manifest["window_bp"] == BUNDLED_WINDOW and BUNDLED_YAML.is_file()


def test_line_numbers_hold_across_read_chunks(tmp_path, capsys, monkeypatch):
    from janus_pretrain.data import fasta_cache
    monkeypatch.setattr(fasta_cache, "CHUNK_BYTES", 97)  # headers and lines split over many reads
    genomes, window, expect = _bad(tmp_path, "star")
    assert shard(genomes, tmp_path / "out", window) != 0
    err = capsys.readouterr().err
    assert all(text in err for text in expect), err
    good = tmp_path / "good"
    good.mkdir()
    seq = random_dna(3000, 10)
    write_fasta(good / "g.fa", [("c1", seq), ("c2", seq[::-1])], width=70)
    write_genomes_yaml(good, [{"name": "g", "fasta": "g.fa"}])
    assert shard(good / "genomes.yaml", good / "out", 1000, "--min-window-bp", "1") == 0
    got = {(m["contig"], m["start"]): d for _, _, d, m in all_samples(read_manifest(good / "out"))}
    assert got[("c2", 1000)] == seq[::-1][1000:2000].encode() and len(got) == 6


def test_a_users_cache_directory_in_out_is_never_deleted(synthetic, tmp_path):
    """Issue 27, dangerous 2: OUT/.cache/ existed before (a user's file in it); only what janus
    shard wrote there is removed, after success and after a failure."""
    out = tmp_path / "o"
    (out / ".cache").mkdir(parents=True)
    (out / ".cache" / "mine.txt").write_text("keep me")
    assert shard(synthetic / "genomes.yaml", out, 1000) == 0
    assert (out / ".cache" / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / ".cache").iterdir()) == ["mine.txt"]  # its own copies are gone
    failed = tmp_path / "failed"
    (failed / ".cache").mkdir(parents=True)
    (failed / ".cache" / "mine.txt").write_text("keep me")
    genomes, window, _ = _bad(tmp_path, "window_too_large")
    assert shard(genomes, failed, window) != 0
    assert sorted(p.name for p in (failed / ".cache").iterdir()) == ["mine.txt"]


def test_a_bgzip_fasta_cut_at_a_block_boundary_is_an_error(tmp_path, capsys):
    """Issue 27, silent 3: gzip readers stop cleanly between BGZF blocks; the missing EOF block says
    the file was cut."""
    import pysam

    fasta = tmp_path / "g.fa.gz"
    with pysam.BGZFile(str(fasta), "wb") as handle:
        handle.write((">c1\n" + random_dna(200_000, 12) + "\n").encode())
    data = fasta.read_bytes()
    first_block = int.from_bytes(data[16:18], "little") + 1  # BSIZE - 1 in the BC subfield
    write_genomes_yaml(tmp_path, [{"name": "g", "fasta": "g.fa.gz"}])
    assert shard(tmp_path / "genomes.yaml", tmp_path / "whole", 5000) == 0
    fasta.write_bytes(data[:first_block])  # one complete block, no EOF marker: a valid, shorter gzip stream
    assert len(gzip.decompress(fasta.read_bytes())) < 200_000
    capsys.readouterr()
    assert shard(tmp_path / "genomes.yaml", tmp_path / "cut", 5000) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "g.fa.gz" in err[-1] and "end-of-file block" in err[-1], err
