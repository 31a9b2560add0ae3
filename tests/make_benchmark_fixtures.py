"""Write tests/fixtures/benchmarks/: tiny files in each benchmark's native layout, cut from the
bundled genomes (data/genomes), never from the real benchmark data.

    python tests/make_benchmark_fixtures.py [--out tests/fixtures/benchmarks]

- nt/H3/{train,test}.{parquet,fna}, nt/enhancers_types/{train,test}.parquet: the Hugging Face
  layout of InstaDeepAI/nucleotide_transformer_downstream_tasks (columns sequence, name, label,
  task; FASTA headers NAME|LABEL), sequences of the task's length from D. melanogaster chr4.
- gb/human_nontata_promoters/: the same rows twice, as the genomic-benchmarks package writes them
  (train/test/<class>/<id>.txt) and as the Parquet mirror (data/<split>-00000-of-00001.parquet,
  columns seq, label), 251-base windows of S. cerevisiae chrI.
- eqtl/: a DNALongBench eQTL directory for one made-up tissue (Toy_Tissue): config with the
  official flanks and a 12,000-base window (scaled down from 450,000), the variant-gene TSV
  (EQTL_ROWS below: each strand case, each skip, masking edge cases), the bgzip + tabix region
  file (MASKS) and a 2-contig FASTA standing in for hg38 (chr1 = chrI:20,000-44,000,
  chr2 = chr4:200,000-216,000, soft-masking kept).

Deterministic (seeded); tests/test_benchmark_fixtures.py checks the committed files against a
fresh run of this script.
"""
from __future__ import annotations

import argparse
import gzip
import random
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENOMES = REPO / "data" / "genomes"
DEFAULT_OUT = REPO / "tests" / "fixtures" / "benchmarks"
TISSUE = "Toy_Tissue"
WINDOW = 12_000  # seq_len_cutoff of the fixture config (official: 450,000)

# (subset, target, gene_chrom, gene_start, gene_end, strand, region_chrom, region_start, region_end, alt rule)
# alt rule: 'snv' = another base; 'del' = the first base of a 2-base REF; 'ins' = REF + 'GT'.
EQTL_ROWS = [
    ("train", "positive", "chr1", 4000, 6000, "+", "chr1", 9000, 9001, "snv"),     # + strand, gap masked, forward
    ("train", "negative", "chr1", 12000, 15000, "-", "chr1", 10000, 10001, "snv"),  # - strand, gene downstream: flipped
    ("train", "positive", "chr1", 5000, 12000, "-", "chr1", 7000, 7001, "snv"),     # - strand, body covers variant: not flipped
    ("train", "negative", "chr2", 4000, 5000, "+", "chr1", 9000, 9001, "snv"),      # different chromosomes: skipped
    ("train", "positive", "chr1", 300, 900, "+", "chr1", 20000, 20001, "snv"),      # gap 16,199 > 12,000: skipped
    ("valid", "negative", "chr1", 4000, 6000, ".", "chr1", 9000, 9001, "snv"),      # unknown strand: skipped
    ("valid", "positive", "chr1", 1000, 2000, "+", "chr1", 2500, 2501, "snv"),      # TSS window leaves the contig: N
    ("valid", "negative", "chr1", 3500, 4500, "+", "chr1", 18000, 18001, "snv"),    # kept, variant past the 12,000 cut
    ("test", "positive", "chr2", 4000, 5000, "+", "chr2", 6000, 6002, "del"),       # deletion, windows overlap (no mask)
    ("test", "negative", "chr2", 9000, 11000, "-", "chr2", 5000, 5001, "ins"),      # insertion, flipped, chr2 masks only
]
# Other eQTL regions (BED, 0-based): which records they mask is worked out in tests/test_benchmark_eqtl.py.
MASKS = [("chr1", 6000, 6200), ("chr1", 7500, 7600), ("chr1", 8400, 9600), ("chr1", 9500, 10600),
         ("chr1", 11000, 11100), ("chr2", 6000, 6200)]


def first_record(path: Path) -> str:
    parts = []
    with gzip.open(path, "rt") as handle:
        next(handle)
        for line in handle:
            if line.startswith(">"):
                break
            parts.append(line.strip())
    return "".join(parts)


def write_parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def windows(genome: str, length: int, count: int, rng: random.Random) -> list[str]:
    starts = rng.sample(range(0, len(genome) - length, length), count)
    return [genome[s:s + length].upper() for s in starts]


def make_nt(out: Path, dmel: str, rng: random.Random) -> None:
    for task, length, classes, sizes, fasta in (("H3", 500, 2, (20, 8), True), ("enhancers_types", 200, 3, (24, 9), False)):
        for split, count in zip(("train", "test"), sizes):
            seqs = windows(dmel, length, count, rng)
            labels = [i % classes for i in range(count)]
            rng.shuffle(labels)
            names = [f"fixture_{task}_{split}_{i}" for i in range(count)]
            write_parquet(out / "nt" / task / f"{split}.parquet",
                          {"sequence": seqs, "name": names, "label": labels, "task": [task] * count})
            if fasta:
                (out / "nt" / task / f"{split}.fna").write_text(
                    "".join(f">{n}|{y}\n{s}\n" for n, y, s in zip(names, labels, seqs)))


def make_gb(out: Path, scer: str, rng: random.Random) -> None:
    classes = ("negative", "positive")  # sorted: index 0, 1
    for split, count in (("train", 16), ("test", 8)):
        seqs = windows(scer, 251, count, rng)
        labels = [i % 2 for i in range(count)]
        rng.shuffle(labels)
        write_parquet(out / "gb" / "human_nontata_promoters" / "data" / f"{split}-00000-of-00001.parquet",
                      {"seq": seqs, "label": labels})
        for i, (seq, label) in enumerate(zip(seqs, labels)):
            target = out / "gb_package" / "human_nontata_promoters" / split / classes[label] / f"{i}.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(seq)


def _alt(ref: str, rule: str) -> str:
    if rule == "snv":
        return "ACGT"[("ACGT".index(ref[0]) + 1) % 4]
    return ref[0] if rule == "del" else ref + "GT"


def make_eqtl(out: Path, contigs: dict[str, str]) -> None:
    import pysam

    root = out / "eqtl"
    for sub in ("config", "targets", "seqs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "seqs" / "genome.fa").write_text(
        "".join(f">{name}\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n" for name, seq in contigs.items()))
    header = ["gene_chrom", "gene_start", "gene_end", "region_chrom", "region_start", "region_end", "gene_id",
              "gene_strand", "region_id", "target", "subset", "allele1", "allele2", "distance_to_tss"]
    lines = ["\t".join(header)]
    for i, (subset, target, gchrom, gs, ge, strand, rchrom, rs, re_, rule) in enumerate(EQTL_ROWS):
        ref = contigs[rchrom][rs:re_].upper()
        tss = gs if strand == "+" else ge - 1
        lines.append("\t".join(map(str, [gchrom, gs, ge, rchrom, rs, re_, f"GENE{i}", strand, f"{rchrom}_{rs}_{i}",
                                         target, subset, ref, _alt(ref, rule), abs(rs - tss)])))
    (root / "targets" / f"{TISSUE}.data.tsv").write_text("\n".join(lines) + "\n")
    bed = root / "targets" / f"{TISSUE}.regions.bed"
    bed.write_text("".join(f"{c}\t{s}\t{e}\tregion{i}\n" for i, (c, s, e) in enumerate(sorted(MASKS))))
    pysam.tabix_index(str(bed), preset="bed", force=True)  # writes .bed.gz and .bed.gz.tbi, removes .bed
    config = [("organism", "human", "str"), ("genome_fa", "seqs/genome.fa", "str"), ("seq_len_cutoff", WINDOW, "int"),
              ("tss_flank_upstream", 3000, "int"), ("tss_flank_downstream", 3000, "int"),
              ("region_flank_upstream", 500, "int"), ("region_flank_downstream", 500, "int"),
              ("eQTL_file", f"targets/{TISSUE}.data.tsv", "str"), ("eQTL_tabix_file", f"targets/{TISSUE}.regions.bed.gz", "str")]
    (root / "config" / f"gtex_hg38.{TISSUE}.config").write_text("".join(f"{k}\t{v}\t{t}\n" for k, v, t in config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    rng = random.Random(0)
    dmel, scer = first_record(GENOMES / "dmel_chr4.fna.gz"), first_record(GENOMES / "scer_chrI.fna.gz")
    make_nt(args.out, dmel, rng)
    make_gb(args.out, scer, rng)
    make_eqtl(args.out, {"chr1": scer[20_000:44_000], "chr2": dmel[200_000:216_000]})
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
