"""Labelled window tasks from a genome and its annotation (data_prep/make_tasks.py).

Tasks (one TSV per split, columns sequence, label, contig, start, strand):
  splice     windows centred on annotated splice donors and acceptors (transcript orientation)
             and on decoy GT/AG dinucleotides that are no annotated site: donor / acceptor / decoy
  region     windows labelled by the class of their centre base: exon / intron / intergenic
  promoter   the `window` bases upstream of an annotated TSS (transcript orientation) vs windows at
             least `promoter_gap` bp from every TSS, random orientation: promoter / background

Splits are blocks of each contig: train [0, a), valid [a, b), test [b, end), the test block at
the contig end (where the pretraining manifests hold out their valid/test blocks), or whole
contigs given as test contigs. A window belongs to the split whose block holds it entirely;
windows crossing a block boundary are dropped, so no test window shares a base with a train
window. Windows with non-ACGT bases are dropped; sequences are written upper case (soft-masking
would hand the classifier a repeat annotation). Classes are balanced by seeded subsampling.
"""
from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from janus_pretrain.atomic_io import atomic_write_text
from janus_pretrain.evaluation.annotation import (EXON, INTERGENIC, INTRON, REGION_NAMES, Annotation, region_classes,
                                                  splice_sites, transcription_starts)

SPLITS = ("train", "valid", "test")
TASKS = ("splice", "region", "promoter")
COMPLEMENT = str.maketrans("ACGTN", "TGCAN")  # str.translate table: base -> its complement (N stays N)


@dataclass
class TaskOptions:
    window: int = 200  # bases per window of the region and promoter tasks
    splice_window: int = 100  # bases per window of the splice task, centred on the site
    valid_fraction: float = 0.1  # share of each contig (before the test block) for validation
    test_fraction: float = 0.1  # share at each contig's end for test (bundled.yaml holds out the last 10% in pretraining)
    test_contigs: list[str] = field(default_factory=list)  # whole contigs for test; then other contigs have no test block
    max_per_class: int = 400  # rows per class in train; valid and test get half of it
    promoter_gap: int = 1000  # background windows keep this distance from every TSS
    seed: int = 0  # seeds decoy, background and balancing choices


@dataclass
class Row:
    sequence: str
    label: str
    contig: str
    start: int  # 0-based genomic start of the window
    strand: str
    split: str = ""


def split_blocks(contigs: dict[str, int], options: TaskOptions) -> list[tuple[str, str, int, int]]:
    """(split, contig, start, end) blocks."""
    blocks = []
    for name, length in contigs.items():
        if name in options.test_contigs:
            blocks.append(("test", name, 0, length))
            continue
        test_fraction = 0.0 if options.test_contigs else options.test_fraction  # held-out contigs replace end blocks
        valid_start = int(length * (1 - test_fraction - options.valid_fraction))
        test_start = int(length * (1 - test_fraction))
        blocks += [("train", name, 0, valid_start), ("valid", name, valid_start, test_start),
                   ("test", name, test_start, length)]
    return [b for b in blocks if b[3] > b[2]]


def assign_split(blocks, contig: str, start: int, end: int) -> str | None:
    for split, name, b_start, b_end in blocks:
        if name == contig and b_start <= start and end <= b_end:
            return split
    return None


def _oriented(genome: str, start: int, end: int, strand: str) -> str | None:
    if start < 0 or end > len(genome):
        return None
    seq = genome[start:end].upper()
    if set(seq) - set("ACGT"):
        return None
    return seq if strand == "+" else seq.translate(COMPLEMENT)[::-1]


def splice_rows(genome: str, contig: str, annotation: Annotation, options: TaskOptions, rng: random.Random) -> list[Row]:
    w = options.splice_window
    sites = splice_sites(annotation, contig)
    rows = []
    for (pos, strand), kind in sorted(sites.items()):
        # centre the window on the boundary between exon and intron
        start = pos - w // 2 + (1 if (kind == "donor") == (strand == "-") else 0)
        seq = _oriented(genome, start, start + w, strand)
        if seq:
            rows.append(Row(seq, kind, contig, start, strand))
    regions = region_classes(annotation, contig, len(genome))
    genic = np.flatnonzero(regions != INTERGENIC)
    upper = genome.upper()
    wanted = max(Counter(r.label for r in rows).values(), default=0)
    decoys, tries = [], 0
    while len(decoys) < wanted and tries < 200 * max(wanted, 1) and len(genic):
        tries += 1
        pos, strand = int(genic[rng.randrange(len(genic))]), rng.choice("+-")
        kind = rng.choice(("donor", "acceptor"))
        # the canonical dinucleotide read in the chosen orientation, at a position no transcript splices
        pair = (upper[pos:pos + 2] if kind == "donor" else upper[pos - 1:pos + 1]) if strand == "+" else \
            (upper[pos - 1:pos + 1] if kind == "donor" else upper[pos:pos + 2]).translate(COMPLEMENT)[::-1]
        if pair != ("GT" if kind == "donor" else "AG") or (pos, strand) in sites:
            continue
        start = pos - w // 2 + (1 if (kind == "donor") == (strand == "-") else 0)
        seq = _oriented(genome, start, start + w, strand)
        if seq:
            decoys.append(Row(seq, "decoy", contig, start, strand))
    return rows + decoys


def region_rows(genome: str, contig: str, annotation: Annotation, options: TaskOptions, rng: random.Random) -> list[Row]:
    w = options.window
    regions = region_classes(annotation, contig, len(genome))
    rows = []
    for cls in (EXON, INTRON, INTERGENIC):
        centres = np.flatnonzero(regions == cls)
        # several candidates per class and split, so balancing has room after dropped windows
        for pos in rng.sample(list(centres), min(len(centres), 40 * options.max_per_class)):
            seq = _oriented(genome, int(pos) - w // 2, int(pos) - w // 2 + w, "+")
            if seq:
                rows.append(Row(seq, REGION_NAMES[cls], contig, int(pos) - w // 2, "+"))
    return rows


def promoter_rows(genome: str, contig: str, annotation: Annotation, options: TaskOptions, rng: random.Random) -> list[Row]:
    w, gap = options.window, options.promoter_gap
    starts = transcription_starts(annotation, contig)
    rows = []
    for tss, strand in starts:
        start = tss - w if strand == "+" else tss + 1  # the w bases upstream, TSS excluded
        seq = _oriented(genome, start, start + w, strand)
        if seq:
            rows.append(Row(seq, "promoter", contig, start, strand))
    tss_positions = np.array(sorted(p for p, _ in starts)) if starts else np.array([], dtype=np.int64)
    wanted, tries, background = len(rows), 0, []
    while len(background) < 3 * wanted and tries < 100 * max(wanted, 1):
        tries += 1
        start = rng.randrange(0, max(1, len(genome) - w))
        if len(tss_positions):
            i = np.searchsorted(tss_positions, start)
            near = [tss_positions[j] for j in (i - 1, i) if 0 <= j < len(tss_positions)]
            if any(start - gap < p < start + w + gap for p in near):
                continue
        strand = rng.choice("+-")
        seq = _oriented(genome, start, start + w, strand)
        if seq:
            background.append(Row(seq, "background", contig, start, strand))
    return rows + background


BUILDERS = {"splice": splice_rows, "region": region_rows, "promoter": promoter_rows}


def balance(rows: list[Row], options: TaskOptions, rng: random.Random) -> dict[str, list[Row]]:
    """Per split: every class cut to the smallest class's count (and to the cap); seeded order."""
    by_split: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_split[row.split][row.label].append(row)
    out = {}
    for split in SPLITS:
        classes = by_split.get(split, {})
        cap = options.max_per_class if split == "train" else max(1, options.max_per_class // 2)
        n = min([len(v) for v in classes.values()] + [cap]) if classes else 0
        chosen = []
        for label in sorted(classes):
            members = sorted(classes[label], key=lambda r: (r.contig, r.start, r.strand))
            chosen += rng.sample(members, n)
        rng.shuffle(chosen)
        out[split] = chosen
    return out


def dedupe_across_splits(rows: list[Row]) -> list[Row]:
    """Drop a row whose sequence also occurs in an earlier split (repeats copy sequence across blocks)."""
    seen: dict[str, str] = {}
    kept = []
    for split in SPLITS:
        for row in (r for r in rows if r.split == split):
            owner = seen.setdefault(row.sequence, split)
            if owner == split:
                kept.append(row)
    return kept


def build_task(task: str, genomes: dict[str, str], annotation: Annotation, options: TaskOptions) -> dict[str, list[Row]]:
    rng = random.Random(f"{options.seed}:{task}")
    blocks = split_blocks({name: len(seq) for name, seq in genomes.items()}, options)
    rows = []
    for contig, genome in genomes.items():
        for row in BUILDERS[task](genome, contig, annotation, options, rng):
            split = assign_split(blocks, contig, row.start, row.start + len(row.sequence))
            if split:
                row.split = split
                rows.append(row)
    return balance(dedupe_across_splits(rows), options, rng)


def write_rows(path: Path, rows: list[Row]) -> None:
    lines = ["\t".join(("sequence", "label", "contig", "start", "strand"))]
    lines += ["\t".join((r.sequence, r.label, r.contig, str(r.start), r.strand)) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def overlaps(rows: list[Row], regions: list[tuple[str, str, int, int]]) -> Counter:
    """How many rows overlap each pretraining split's regions ((split, contig, start, end) blocks)."""
    counts: Counter = Counter()
    for row in rows:
        end = row.start + len(row.sequence)
        for split, contig, start, stop in regions:
            if contig == row.contig and row.start < stop and start < end:
                counts[split] += 1
    return counts


def read_rows(path: Path) -> list[Row]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        return [Row(r["sequence"], r["label"], r["contig"], int(r["start"]), r["strand"]) for r in reader]
