"""Zero-shot coding variants from a genome and its GTF (`janus make-tasks --tasks codon_snv`).

A real-annotation zero-shot task that needs no variant database: single-base substitutions in
annotated coding sequence, labelled by what they do to the protein under the standard genetic code
(nuclear genomes):

  label 1 (expected deleterious)  missense: the second base of a codon changed to a base that
                                  gives another amino acid (never a stop codon);
  label 0 (expected neutral)      synonymous: the third base of a fourfold-degenerate codon
                                  (GCN, GGN, CCN, ACN, GTN, CTN, TCN, CGN) changed to any other base.

A model that learned the codon structure of coding sequence scores the first group lower
(log P(alt) - log P(ref)); an untrained one cannot tell them apart (AUROC 0.5).

Codons come from the CDS lines of transcripts whose coding length is a whole number of codons,
read in transcript orientation from the first complete codon (the GTF frame of the first piece);
stop codons are skipped. A position that two transcripts give different classes or strands is
dropped. Only positions in the test block of each contig (task_builder.split_blocks: the held-out
end that the bundled pretraining manifests keep out of training) are used, so the model never
trained on the labelled bases; the classes are balanced by seeded subsampling (max_per_class each)
and each site gets one seeded alternative base.

Output TSV (what `janus evaluate` reads for kind zero_shot_snv): chrom, pos (1-based), ref, alt
(+ strand, as in the FASTA), label, kind (missense / synonymous), strand.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from janus_pretrain.atomic_io import atomic_write_text
from janus_pretrain.evaluation.annotation import Annotation, Transcript
from janus_pretrain.evaluation.task_builder import COMPLEMENT, Row, TaskOptions, assign_split, split_blocks

TASK = "codon_snv"
_ORDER = "TCAG"
_CODE = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"  # standard code, TCAG order
MISSENSE, SYNONYMOUS = "missense", "synonymous"
LABELS = {MISSENSE: "1", SYNONYMOUS: "0"}


def translate(codon: str) -> str:
    """One amino acid letter ('*' = stop) of an upper-case ACGT codon."""
    return _CODE[16 * _ORDER.index(codon[0]) + 4 * _ORDER.index(codon[1]) + _ORDER.index(codon[2])]


def _with(codon: str, index: int, base: str) -> str:
    return codon[:index] + base + codon[index + 1:]


def coding_positions(transcript: Transcript) -> list[int] | None:
    """Genomic positions (0-based) of the coding bases in transcript order, from the first complete
    codon; None without CDS or when the coding length is not a whole number of codons."""
    plus = transcript.strand == "+"
    pieces = transcript.cds if plus else transcript.cds[::-1]
    if not pieces:
        return None
    positions = [p for start, end, _ in pieces for p in (range(start, end) if plus else range(end - 1, start - 1, -1))]
    positions = positions[pieces[0][2]:]  # GTF frame: bases before the first complete codon
    return positions if positions and len(positions) % 3 == 0 else None


def codon_sites(genome: str, contig: str, annotation: Annotation) -> dict[int, tuple[str, str, str, int]]:
    """{position: (kind, strand, codon, index in codon)} of the missense and synonymous sites of `contig`."""
    sites: dict[int, tuple[str, str, str, int]] = {}
    conflicted: set[int] = set()
    for transcript in annotation.transcripts:
        positions = coding_positions(transcript) if transcript.contig == contig else None
        if positions is None or max(positions) >= len(genome):
            continue
        for i in range(0, len(positions), 3):
            codon_at = positions[i:i + 3]
            codon = "".join(genome[p] for p in codon_at).upper()
            if transcript.strand == "-":
                codon = codon.translate(COMPLEMENT)
            if set(codon) - set("ACGT") or translate(codon) == "*":
                continue
            candidates = [(codon_at[1], MISSENSE, 1)]
            if len({translate(_with(codon, 2, b)) for b in "ACGT"}) == 1:  # fourfold degenerate
                candidates.append((codon_at[2], SYNONYMOUS, 2))
            for position, kind, index in candidates:
                if position in sites and sites[position][:2] != (kind, transcript.strand):
                    conflicted.add(position)
                sites.setdefault(position, (kind, transcript.strand, codon, index))
    return {p: v for p, v in sites.items() if p not in conflicted}


def _alternative(codon: str, index: int, kind: str, rng: random.Random) -> str | None:
    """One alternative base in transcript orientation: another amino acid (not stop) for missense."""
    amino = translate(codon)
    options = [b for b in "ACGT" if b != codon[index]
               and (kind == SYNONYMOUS or translate(_with(codon, index, b)) not in (amino, "*"))]
    return rng.choice(options) if options else None


@dataclass
class CodingSnv:
    contig: str
    position: int  # 0-based
    ref: str  # + strand, as in the FASTA
    alt: str
    kind: str  # MISSENSE or SYNONYMOUS
    strand: str  # the transcript's

    def as_row(self) -> Row:
        """The one labelled base as a task_builder Row (for the pretraining-overlap report)."""
        return Row(self.ref, self.kind, self.contig, self.position, self.strand, "test")


def build_codon_snv(genomes: dict[str, str], annotation: Annotation, options: TaskOptions) -> list[CodingSnv]:
    """Balanced missense / synonymous SNVs in the test blocks, sorted by position."""
    rng = random.Random(f"{options.seed}:{TASK}")
    blocks = split_blocks({name: len(seq) for name, seq in genomes.items()}, options)
    by_kind: dict[str, list[CodingSnv]] = {MISSENSE: [], SYNONYMOUS: []}
    for contig, genome in genomes.items():
        for position, (kind, strand, codon, index) in sorted(codon_sites(genome, contig, annotation).items()):
            if assign_split(blocks, contig, position, position + 1) != "test":
                continue
            alt = _alternative(codon, index, kind, rng)
            if alt is None:
                continue
            ref = genome[position].upper()
            alt = alt if strand == "+" else alt.translate(COMPLEMENT)
            by_kind[kind].append(CodingSnv(contig, position, ref, alt, kind, strand))
    n = min([len(rows) for rows in by_kind.values()] + [options.max_per_class])
    chosen = [row for kind in (MISSENSE, SYNONYMOUS) for row in rng.sample(by_kind[kind], n)]
    return sorted(chosen, key=lambda v: (v.contig, v.position))


def write_variants(path: Path, variants: list[CodingSnv]) -> None:
    lines = ["\t".join(("chrom", "pos", "ref", "alt", "label", "kind", "strand"))]
    lines += ["\t".join((v.contig, str(v.position + 1), v.ref, v.alt, LABELS[v.kind], v.kind, v.strand))
              for v in variants]
    atomic_write_text(path, "\n".join(lines) + "\n")


def counts(variants: list[CodingSnv]) -> dict[str, int]:
    return dict(sorted(Counter(v.kind for v in variants).items()))
