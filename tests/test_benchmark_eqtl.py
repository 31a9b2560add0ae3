"""DNALongBench eQTL: the config and TSV readers, and the TSS-to-variant windows on the fixture
(tests/make_benchmark_fixtures.py: EQTL_ROWS, MASKS; window 12,000, flanks 3,000 / 500).

Expected windows are worked out by hand from the official rules (official.FACTS "eQTL ...") on the
fixture's coordinates, and checked against the FASTA read independently of pyfaidx.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from janus_pretrain.downstream.tsv import TableError
from janus_pretrain.evaluation.benchmarks.eqtl_files import config_path, read_eqtl_config, read_eqtl_records
from janus_pretrain.evaluation.benchmarks.eqtl_windows import (FastaGenome, IntervalMasks, TabixMasks, WindowSpec,
                                                               load_eqtl_subset, materialise, plan_windows)
from janus_pretrain.evaluation.benchmarks.protocol import reverse_complement

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "benchmarks" / "eqtl"
TISSUE = "Toy_Tissue"
MASKS = {"chr1": [(6000, 6200), (7500, 7600), (8400, 9600), (9500, 10600), (11000, 11100)], "chr2": [(6000, 6200)]}


@pytest.fixture(scope="module")
def eqtl_dir(tmp_path_factory) -> Path:
    """A copy of the fixture (pyfaidx writes its .fai beside the FASTA)."""
    target = tmp_path_factory.mktemp("eqtl") / "eQTL"
    shutil.copytree(FIXTURE, target)
    return target


@pytest.fixture(scope="module")
def contigs(eqtl_dir) -> dict[str, str]:
    out, name = {}, None
    for line in (eqtl_dir / "seqs" / "genome.fa").read_text().splitlines():
        if line.startswith(">"):
            name = line[1:]
            out[name] = ""
        else:
            out[name] += line
    return out


@pytest.fixture(scope="module")
def config(eqtl_dir):
    return read_eqtl_config(config_path(eqtl_dir, TISSUE))


@pytest.fixture(scope="module")
def built(config):
    """subset -> (plans, {TSV line: window})"""
    out = {}
    for subset in ("train", "valid", "test"):
        loaded = load_eqtl_subset(config, subset)
        out[subset] = (loaded.plans, {int(p.record.where.rsplit(" ", 1)[1]): loaded.window(i)
                                      for i, p in enumerate(loaded.plans.plans)})
    return out


def masked(seq: str, spans) -> str:
    for a, b in spans:
        seq = seq[:a] + "N" * (b - a) + seq[b:]
    return seq


def test_config_reads_paths_relative_to_the_eqtl_directory(config, eqtl_dir):
    assert config.genome_fa == eqtl_dir / "seqs" / "genome.fa" and config.tabix_file.name == f"{TISSUE}.regions.bed.gz"
    assert WindowSpec.from_config(config) == WindowSpec(3000, 3000, 500, 500, 12_000)
    assert WindowSpec.from_config(config, length=8000).length == 8000


def test_skip_counts_per_subset(built):
    train, valid, test = (built[s][0].counts for s in ("train", "valid", "test"))
    assert (train.records, train.different_chromosome, train.too_far, train.kept) == (5, 1, 1, 3)
    assert (valid.records, valid.unknown_strand, valid.kept, valid.variant_cut_off) == (3, 1, 2, 1)
    assert (test.records, test.kept, test.ref_mismatch) == (2, 2, 0)
    assert "3 of 5 records kept" in train.line() and "1 on different chromosomes" in train.line()
    assert valid.as_dict()["variant_cut_off"] == 1


def test_every_window_has_the_window_length(built):
    for _, windows in built.values():
        assert {len(w.ref) for w in windows.values()} == {len(w.alt) for w in windows.values()} == {12_000}


def test_plus_strand_window_from_tss_flank_to_region_flank_with_gap_masked(built, contigs):
    w = built["train"][1][2]  # + gene TSS 4000, SNV at 9000: span [1000, 9501)
    expected = masked(contigs["chr1"][1000:9501].upper(), [(6500, 6600)])  # MASKS [7500, 7600); [8400, 9600) crosses the end
    assert not w.plan.reverse and w.ref == expected + "N" * (12_000 - 8501)
    assert w.masked_bases == 100 and w.ref_offset == w.alt_offset == 8000
    assert w.alt == expected[:8000] + "A" + expected[8001:] + "N" * 3499 and w.label == 1


def test_minus_strand_gene_downstream_is_reverse_complemented(built, contigs):
    w = built["train"][1][3]  # - gene [12000, 15000): TSS 14999; SNV A>C at 10000: span [9500, 18000)
    forward = masked(contigs["chr1"][9500:18000].upper(), [(1500, 1600)])  # [9500, 10600) starts at 0: left alone
    assert w.plan.reverse and w.masked_bases == 100
    assert w.ref == reverse_complement(forward) + "N" * 3500
    assert w.alt == reverse_complement(forward[:500] + "C" + forward[501:]) + "N" * 3500
    assert w.ref_offset == w.alt_offset == 7999 and w.alt[7999] == "G"  # complement of C


def test_minus_strand_gene_covering_the_variant_is_not_flipped(built, contigs):
    w = built["train"][1][4]  # - gene [5000, 12000): TSS 11999 lies downstream, but gene_start < region end
    assert not w.plan.reverse
    expected = masked(contigs["chr1"][6500:15000].upper(), [(1000, 1100), (1900, 3100)])  # [8400, 9600) lies inside
    assert w.ref == expected + "N" * 3500 and w.masked_bases == 1300 and w.alt[500] == "T"


def test_window_leaving_the_contig_is_n_padded_and_overlapping_windows_are_not_masked(built, contigs):
    w = built["valid"][1][8]  # TSS 1000: TSS window [-2000, 4001) overlaps the region window [2000, 3001)
    assert w.ref == "N" * 2000 + contigs["chr1"][0:4001].upper() + "N" * 5999
    assert w.plan.masks == () and w.ref_offset == 4500


def test_long_span_is_cut_and_the_lost_variant_reported(built, contigs):
    w = built["valid"][1][9]  # span [500, 18501) = 18,001 bases, gap 10,999 <= 12,000: kept
    assert w.ref_offset is None and w.alt_offset is None
    union = [(7000, 7100), (7900, 10100), (10500, 10600)]  # four regions in the gap, two overlapping
    assert w.ref == masked(contigs["chr1"][500:18501].upper(), union)[:12_000] and w.masked_bases == 2400


def test_indels_shift_the_alt_window(built, contigs):
    deletion = built["test"][1][10]  # CC>C at chr2:6000, windows overlap
    ref = contigs["chr2"][1000:7001].upper()
    assert deletion.alt == ref[:5000] + "C" + ref[5002:] + "N" * 6000 and deletion.alt_offset == 5000
    insertion = built["test"][1][11]  # G>GGT at chr2:5000, flipped; only chr2's region is masked
    forward = masked(contigs["chr2"][4500:14000].upper(), [(1500, 1700)])
    assert insertion.masked_bases == 200 and insertion.ref == reverse_complement(forward) + "N" * 2500
    assert insertion.alt == reverse_complement(forward[:500] + "GGT" + forward[501:]) + "N" * 2498
    assert insertion.alt[insertion.alt_offset:insertion.alt_offset + 3] == "ACC"


def test_tabix_queries_match_in_memory_regions(config, eqtl_dir):
    records = read_eqtl_records(config.eqtl_file)
    genome, spec = FastaGenome(config.genome_fa), WindowSpec.from_config(config)
    for subset in ("train", "valid", "test"):
        via_tabix = plan_windows(records, genome, TabixMasks(config.tabix_file), spec, subset).plans
        assert via_tabix == plan_windows(records, genome, IntervalMasks(MASKS), spec, subset).plans


def test_tabix_intervals_are_half_open_and_unknown_contigs_empty(config):
    masks = TabixMasks(config.tabix_file)
    assert masks.query("chr1", 7600, 8400) == []  # [7500, 7600) and [8400, 9600) only touch the query
    assert masks.query("chr1", 7599, 8401) == [(7500, 7600), (8400, 9600)]
    assert masks.query("chrZ", 0, 10**6) == [] and masks.query("chr2", 0, 10**6) == [(6000, 6200)]


def test_a_shorter_window_moves_the_distance_filter_too(config):
    records = read_eqtl_records(config.eqtl_file)
    plans = plan_windows(records, FastaGenome(config.genome_fa), IntervalMasks(MASKS),
                         WindowSpec.from_config(config, length=8000), "valid")
    assert (plans.counts.too_far, plans.counts.kept) == (1, 1)  # gap 10,999 > 8,000 now
    assert len(materialise(plans.plans[0], FastaGenome(config.genome_fa), 8000).ref) == 8000


def _edited(eqtl_dir: Path, tmp_path: Path, line: int, column: str, value: str) -> Path:
    path = tmp_path / "edited.tsv"
    rows = [r.split("\t") for r in (eqtl_dir / "targets" / f"{TISSUE}.data.tsv").read_text().splitlines()]
    rows[line - 1][rows[0].index(column)] = value
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    return path


def test_ref_mismatch_stops_with_the_record_or_is_counted(config, eqtl_dir, tmp_path):
    records = read_eqtl_records(_edited(eqtl_dir, tmp_path, 2, "allele1", "G"))  # genome has T at chr1:9000
    genome, spec = FastaGenome(config.genome_fa), WindowSpec.from_config(config)
    with pytest.raises(TableError, match=r"edited.tsv line 2, column 'allele1': 'G' but the genome has 'T'"):
        plan_windows(records, genome, IntervalMasks(MASKS), spec, "train")
    counts = plan_windows(records, genome, IntervalMasks(MASKS), spec, "train", on_ref_mismatch="skip").counts
    assert (counts.ref_mismatch, counts.kept) == (1, 2)


def test_missing_contig_names_the_record(config, eqtl_dir, tmp_path):
    path = _edited(eqtl_dir, tmp_path, 2, "region_chrom", "chrX")
    rows = path.read_text().splitlines()
    rows[1] = rows[1].replace("chr1", "chrX", 1)  # gene_chrom too, so it is not a different-chromosome skip
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(TableError, match=r"line 2, column 'region_chrom': contig 'chrX' is not in"):
        plan_windows(read_eqtl_records(path), FastaGenome(config.genome_fa), IntervalMasks(MASKS),
                     WindowSpec.from_config(config), "train")


@pytest.mark.parametrize("column, value, message", [
    ("gene_start", "4k", r"line 3, column 'gene_start': '4k' is not an integer"),
    ("region_end", "9000", r"line 3, column 'region_end': 9000 is not after region_start"),
    ("target", "yes", r"line 3, column 'target': 'yes', expected 'positive' or 'negative'"),
    ("subset", "dev", r"line 3, column 'subset': 'dev'"),
    ("allele2", "A*", r"line 3, column 'allele2': invalid DNA character"),
])
def test_bad_tsv_rows_name_line_and_column(eqtl_dir, tmp_path, column, value, message):
    path = _edited(eqtl_dir, tmp_path, 3, column, value)
    if column == "region_end":
        path.write_text(path.read_text().replace("\t10000\t9000\t", "\t9000\t9000\t"))
    with pytest.raises(TableError, match=message):
        read_eqtl_records(path)


def test_tsv_header_and_field_count_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("gene_chrom\tgene_start\nchr1\t5\n")
    with pytest.raises(TableError, match=r"bad.tsv line 1: header lacks columns \['gene_end'"):
        read_eqtl_records(bad)
    good = (FIXTURE / "targets" / f"{TISSUE}.data.tsv").read_text().splitlines()
    bad.write_text("\n".join(good[:2] + [good[2] + "\textra"]) + "\n")
    with pytest.raises(TableError, match=r"bad.tsv line 3: 15 fields, the header has 14"):
        read_eqtl_records(bad)


def test_config_errors_name_file_line_and_key(tmp_path):
    (tmp_path / "config").mkdir()
    path = tmp_path / "config" / "gtex_hg38.X.config"
    text = (FIXTURE / "config" / f"gtex_hg38.{TISSUE}.config").read_text()
    path.write_text(text.replace("tss_flank_upstream\t3000\tint", "tss_flank_upstream\tlots\tint"))
    with pytest.raises(TableError, match=r"line 4, key 'tss_flank_upstream': 'lots' is not a int"):
        read_eqtl_config(path)
    path.write_text("".join(line + "\n" for line in text.splitlines() if not line.startswith("eQTL_tabix_file")))
    with pytest.raises(TableError, match=r"missing keys \['eQTL_tabix_file'\]"):
        read_eqtl_config(path)
    with pytest.raises(TableError, match="config file not found"):
        read_eqtl_config(path.with_name("nope.config"))


def test_tabix_file_without_index_is_one_clear_error(tmp_path):
    target = tmp_path / "regions.bed.gz"
    shutil.copy(FIXTURE / "targets" / f"{TISSUE}.regions.bed.gz", target)
    with pytest.raises(TableError, match="needs its .tbi index beside it"):
        TabixMasks(target)
