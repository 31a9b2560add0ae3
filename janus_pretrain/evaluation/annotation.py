"""Gene annotation (GTF) reduced to what the annotation tasks need: transcripts with their exons,
gene spans, and per-base region classes (exon / intron / intergenic).

Coordinates inside this module are 0-based half-open [start, end), converted from GTF's 1-based
inclusive columns when read. Errors name the file and the line.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from janus_pretrain.atomic_io import text_lines

_ATTR = re.compile(r'(\S+)\s+"([^"]*)"')
EXON, INTRON, INTERGENIC = 0, 1, 2
REGION_NAMES = ("exon", "intron", "intergenic")


class AnnotationError(ValueError):
    """A GTF file that cannot be used; names the file and the line."""


@dataclass
class Transcript:
    id: str
    contig: str
    strand: str  # "+" or "-"
    exons: list[tuple[int, int]] = field(default_factory=list)  # sorted by start, 0-based half-open
    cds: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, GTF frame), sorted by start

    @property
    def start(self) -> int:
        return self.exons[0][0]

    @property
    def end(self) -> int:
        return self.exons[-1][1]

    @property
    def tss(self) -> int:
        """0-based position of the first transcribed base."""
        return self.start if self.strand == "+" else self.end - 1

    def introns(self) -> list[tuple[int, int]]:
        return [(a[1], b[0]) for a, b in zip(self.exons, self.exons[1:]) if b[0] > a[1]]


@dataclass
class Annotation:
    path: str
    transcripts: list[Transcript]
    genes: dict[str, list[tuple[int, int]]]  # contig -> gene spans (0-based half-open)

    def contigs(self) -> set[str]:
        return {t.contig for t in self.transcripts} | set(self.genes)


def _whole_lines(path: Path):
    """(line number, line) of the file; a last line without its newline means the file was cut
    mid-line (a cut inside column 9 still has nine columns and would be read as a shorter attribute list)."""
    for line_no, line in text_lines(path, AnnotationError):
        if not line.endswith("\n"):
            raise AnnotationError(f"{path} line {line_no}: the last line has no newline: the file was cut "
                                  f"mid-line (re-download it; if it is complete, end it with a newline)")
        yield line_no, line


def read_gtf(path: str | Path) -> Annotation:
    """Exons grouped by transcript_id, and gene spans (from `gene` lines, or from transcripts when absent)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"GTF file not found: {path}")
    exons: dict[str, Transcript] = {}
    genes: dict[str, list[tuple[int, int]]] = defaultdict(list)
    cds: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # transcript_id -> CDS pieces
    for line_no, line in _whole_lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 9:
            raise AnnotationError(f"{path} line {line_no}: expected 9 tab-separated GTF columns, got {len(fields)}")
        contig, _, feature, start, end, _, strand = fields[:7]
        try:
            start0, end0 = int(start) - 1, int(end)
        except ValueError:
            raise AnnotationError(f"{path} line {line_no}, columns 4-5: start/end {start!r}/{end!r} "
                                  f"are not integers") from None
        if start0 < 0 or end0 <= start0:
            raise AnnotationError(f"{path} line {line_no}, columns 4-5: bad interval {start}-{end} (1-based, inclusive)")
        if feature == "gene":
            genes[contig].append((start0, end0))
        elif feature == "CDS":
            tid = dict(_ATTR.findall(fields[8])).get("transcript_id")
            frame = fields[7]
            if tid and frame in ("0", "1", "2"):
                cds[tid].append((start0, end0, int(frame)))
        elif feature == "exon":
            if strand not in "+-" or not strand:
                raise AnnotationError(f"{path} line {line_no}, column 7: strand {strand!r} is not + or -")
            attrs = dict(_ATTR.findall(fields[8]))
            tid = attrs.get("transcript_id")
            if not tid:
                raise AnnotationError(f"{path} line {line_no}, column 9: exon without a transcript_id")
            transcript = exons.setdefault(tid, Transcript(tid, contig, strand))
            if transcript.contig != contig or transcript.strand != strand:
                raise AnnotationError(f"{path} line {line_no}: transcript {tid} changes contig or strand")
            transcript.exons.append((start0, end0))
    if not exons:
        raise AnnotationError(f"{path}: no exon lines; the annotation tasks need exons grouped by transcript_id")
    transcripts = []
    for transcript in exons.values():
        transcript.exons.sort()
        transcript.cds = sorted(cds.get(transcript.id, []))
        transcripts.append(transcript)
    gene_contigs = set(genes)
    for t in transcripts:  # a contig without `gene` lines: its transcripts' spans are the genes
        if t.contig not in gene_contigs:
            genes[t.contig].append((t.start, t.end))
    transcripts.sort(key=lambda t: (t.contig, t.start, t.id))
    return Annotation(str(path), transcripts, dict(genes))


def region_classes(annotation: Annotation, contig: str, length: int) -> np.ndarray:
    """(length,) uint8 per base: EXON if in any exon, else INTRON if inside any transcript or gene
    span, else INTERGENIC. Exon wins over intron (alternative isoforms)."""
    out = np.full(length, INTERGENIC, dtype=np.uint8)
    for start, end in annotation.genes.get(contig, []):
        out[start:min(end, length)] = INTRON
    for t in annotation.transcripts:
        if t.contig == contig:
            out[t.start:min(t.end, length)] = np.minimum(out[t.start:min(t.end, length)], INTRON)
    for t in annotation.transcripts:
        if t.contig == contig:
            for start, end in t.exons:
                out[start:min(end, length)] = EXON
    return out


def splice_sites(annotation: Annotation, contig: str) -> dict[tuple[int, str], str]:
    """{(position, strand): "donor" | "acceptor"}: position is the first intron base for a donor
    and the last intron base for an acceptor, in transcript orientation, 0-based genomic."""
    sites: dict[tuple[int, str], str] = {}
    for t in annotation.transcripts:
        if t.contig != contig:
            continue
        for start, end in t.introns():
            first, last = (start, end - 1) if t.strand == "+" else (end - 1, start)
            sites[(first, t.strand)] = "donor"
            sites[(last, t.strand)] = "acceptor"
    return sites


def transcription_starts(annotation: Annotation, contig: str) -> list[tuple[int, str]]:
    return sorted({(t.tss, t.strand) for t in annotation.transcripts if t.contig == contig})
