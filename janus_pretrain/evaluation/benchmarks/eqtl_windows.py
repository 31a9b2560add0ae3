"""The DNALongBench eQTL input: one window from a gene's TSS to the variant, as the official loader builds it.

For a record (0-based half-open coordinates, official/facts "eQTL ..."):

  tss      = gene_start on '+', gene_end - 1 on '-' (other strands: skipped, counted)
  windows  TSS window [tss - up_t, tss + 1 + down_t), region window [region_start - up_r, region_end + down_r)
  gap      = max(0, max(starts) - min(ends)); gap > length: skipped (counted); other chromosome: skipped
  span     [min(starts), max(ends)), N outside the contig; genome there must equal allele1 (REF check)
  masking  only when gap > 0: tabix regions overlapping the gap between the two windows become N when
           both their ends lie strictly inside (0, span length)
  alt      allele2 in place of [region_start, region_end), after masking
  strand   both reverse-complemented when gene_start > region_end + down_r
  length   N-padded on the right, or cut to the first `length` bases

Planning (`plan_windows`) does the filtering, the REF check and the mask lookup per record and
keeps only coordinates, so a dataset can hold thousands of records; `materialise` makes the two
strings of one plan on demand (450 kbp each).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

from janus_pretrain.downstream.indexed_fasta import FastaError, open_fasta
from janus_pretrain.downstream.tsv import TableError
from janus_pretrain.evaluation.benchmarks.eqtl_files import EqtlConfig, EqtlRecord, read_eqtl_records
from janus_pretrain.evaluation.benchmarks.protocol import reverse_complement

PYSAM_HINT = "reading the eQTL tabix file needs pysam, which is not installed: pip install 'janus-pretrain[eval]'"


class Genome(Protocol):
    def fetch(self, chrom: str, start: int, end: int) -> str:
        """Upper-case bases [start, end) of `chrom`, N where the interval leaves the contig."""


class Masks(Protocol):
    def query(self, chrom: str, start: int, end: int) -> list[tuple[int, int]]:
        """(start, end) of every region overlapping [start, end) of `chrom` (tabix semantics)."""


class FastaGenome:
    """A FASTA (plain, gzip or bgzip) through pyfaidx (downstream.indexed_fasta)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fasta = open_fasta(path)

    def fetch(self, chrom: str, start: int, end: int) -> str:
        if chrom not in self.fasta.keys():
            raise FastaError(f"contig {chrom!r} is not in {self.path}")
        lo, hi = max(start, 0), min(end, len(self.fasta[chrom]))
        inside = str(self.fasta[chrom][lo:hi]).upper() if hi > lo else ""
        left = min(max(-start, 0), end - start)
        return "N" * left + inside + "N" * (end - start - left - len(inside))


class TabixMasks:
    """Regions of a bgzip + tabix file (columns chrom, start, end first, 0-based) through pysam."""

    def __init__(self, path: str | Path):
        try:
            import pysam
        except ImportError:
            raise TableError(f"{path}: {PYSAM_HINT}") from None
        self.path = Path(path)
        try:
            self.tabix = pysam.TabixFile(str(path))
        except (OSError, ValueError) as exc:
            raise TableError(f"{path}: not a readable bgzip + tabix file ({exc}); it needs its .tbi index beside it") from None
        self.contigs = set(self.tabix.contigs)

    def query(self, chrom: str, start: int, end: int) -> list[tuple[int, int]]:
        if chrom not in self.contigs or end <= start:
            return []
        out = []
        for line in self.tabix.fetch(chrom, start, end):
            fields = line.split("\t")
            try:
                out.append((int(fields[1]), int(fields[2])))
            except (IndexError, ValueError):
                raise TableError(f"{self.path}: region line {line[:80]!r} has no integer start and end in columns 2-3") from None
        return out


class IntervalMasks:
    """Regions held in memory: {chrom: [(start, end), ...]}, queried like tabix."""

    def __init__(self, regions: dict[str, list[tuple[int, int]]]):
        self.regions = {chrom: sorted(spans) for chrom, spans in regions.items()}

    def query(self, chrom: str, start: int, end: int) -> list[tuple[int, int]]:
        return [(s, e) for s, e in self.regions.get(chrom, []) if s < end and e > start]


@dataclass(frozen=True)
class WindowSpec:
    """Flanks and window length; the defaults are the official ones (a tissue config may set others)."""
    tss_flank_upstream: int = 3000
    tss_flank_downstream: int = 3000
    region_flank_upstream: int = 500
    region_flank_downstream: int = 500
    length: int = 450_000  # seq_len_cutoff: the distance filter and the padded/cut window length

    @classmethod
    def from_config(cls, config: EqtlConfig, length: int | None = None) -> "WindowSpec":
        """The config's flanks; `length` (e.g. --window-bp) replaces its seq_len_cutoff."""
        return cls(config.tss_flank_upstream, config.tss_flank_downstream, config.region_flank_upstream,
                   config.region_flank_downstream, length if length is not None else config.seq_len_cutoff)


@dataclass
class WindowCounts:
    """What happened to the records of one subset (printable, and recorded with results)."""
    subset: str
    records: int = 0  # rows of this subset
    different_chromosome: int = 0
    too_far: int = 0  # gap between TSS and variant windows above the window length
    unknown_strand: int = 0
    ref_mismatch: int = 0  # only with on_ref_mismatch='skip' (the official run stops instead)
    kept: int = 0
    variant_cut_off: int = 0  # kept, but the variant lies past the cut (as official: still used)

    def line(self) -> str:
        return (f"eQTL {self.subset}: {self.kept} of {self.records} records kept; skipped: "
                f"{self.different_chromosome} on different chromosomes, {self.too_far} farther than the window, "
                f"{self.unknown_strand} with unknown strand, {self.ref_mismatch} with a REF mismatch; "
                f"{self.variant_cut_off} kept with the variant cut off")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WindowPlan:
    """Coordinates of one record's window; `materialise` makes its sequences."""
    record: EqtlRecord
    start: int  # genomic span [start, end) on record.region_chrom, before orientation and padding
    end: int
    variant: tuple[int, int]  # [region_start, region_end) relative to start
    masks: tuple[tuple[int, int], ...]  # N intervals relative to start
    reverse: bool  # reverse-complemented (gene downstream of the region)


@dataclass(frozen=True)
class EqtlWindow:
    ref: str  # reference window, `length` bases
    alt: str  # allele2 substituted, `length` bases
    label: int
    ref_offset: int | None  # where allele1 starts in `ref` (None: cut off)
    alt_offset: int | None  # where allele2 starts in `alt` (None: cut off)
    masked_bases: int  # bases set to N by masking (before the cut)
    plan: WindowPlan


@dataclass
class WindowPlans:
    plans: list[WindowPlan]
    counts: WindowCounts
    spec: WindowSpec = field(default_factory=WindowSpec)


def _tss(record: EqtlRecord) -> int | None:
    return {"+": record.gene_start, "-": record.gene_end - 1}.get(record.gene_strand)


def plan_window(record: EqtlRecord, genome: Genome, masks: Masks, spec: WindowSpec) -> WindowPlan | str:
    """The plan of one record, or the name of the WindowCounts field its skip is counted in."""
    if record.gene_chrom != record.region_chrom:
        return "different_chromosome"
    tss = _tss(record)
    if tss is None:
        return "unknown_strand"
    t0, t1 = tss - spec.tss_flank_upstream, tss + 1 + spec.tss_flank_downstream
    r0, r1 = record.region_start - spec.region_flank_upstream, record.region_end + spec.region_flank_downstream
    gap = max(0, max(t0, r0) - min(t1, r1))
    if gap > spec.length:
        return "too_far"
    try:
        reference = genome.fetch(record.region_chrom, record.region_start, record.region_end)
    except FastaError as exc:
        raise TableError(f"{record.where}, column 'region_chrom': {exc}") from None
    if reference != record.allele1:
        return "ref_mismatch"
    start, end = min(t0, r0), max(t1, r1)
    spans = []
    if gap > 0:
        q0, q1 = (r1, t0) if t0 > r1 else (t1, r0)
        for s, e in masks.query(record.region_chrom, q0, q1):
            a, b = s - start, e - start
            if 0 < a < end - start and 0 < b < end - start:
                spans.append((a, b))
    return WindowPlan(record, start, end, (record.region_start - start, record.region_end - start), tuple(spans),
                      record.gene_start > r1)


def plan_windows(records: Iterable[EqtlRecord], genome: Genome, masks: Masks, spec: WindowSpec, subset: str,
                 on_ref_mismatch: str = "error") -> WindowPlans:
    """Plans of the records of `subset`, with counts. A REF mismatch is an error naming the record
    (the official run stops there) unless on_ref_mismatch='skip', which counts it."""
    if on_ref_mismatch not in ("error", "skip"):
        raise ValueError(f"on_ref_mismatch must be 'error' or 'skip', not {on_ref_mismatch!r}")
    counts, plans = WindowCounts(subset), []
    for record in records:
        if record.subset != subset:
            continue
        counts.records += 1
        plan = plan_window(record, genome, masks, spec)
        if plan == "ref_mismatch" and on_ref_mismatch == "error":
            found = genome.fetch(record.region_chrom, record.region_start, record.region_end)
            raise TableError(f"{record.where}, column 'allele1': {record.allele1!r} but the genome has {found!r} at "
                             f"{record.region_chrom}:{record.region_start}-{record.region_end} (0-based); wrong genome "
                             f"build? (on_ref_mismatch='skip' drops such records and counts them)")
        if isinstance(plan, str):
            setattr(counts, plan, getattr(counts, plan) + 1)
            continue
        counts.kept += 1
        alt_end = plan.variant[0] + len(record.allele2)
        alt_length = (plan.end - plan.start) - (plan.variant[1] - plan.variant[0]) + len(record.allele2)
        counts.variant_cut_off += (alt_length - plan.variant[0] if plan.reverse else alt_end) > spec.length
        plans.append(plan)
    return WindowPlans(plans, counts, spec)


def _fit(sequence: str, length: int) -> str:
    return sequence + "N" * (length - len(sequence)) if len(sequence) <= length else sequence[:length]


def materialise(plan: WindowPlan, genome: Genome, length: int) -> EqtlWindow:
    """The ref and alt windows of `plan`, `length` bases each."""
    record = plan.record
    bases = bytearray(genome.fetch(record.region_chrom, plan.start, plan.end), "ascii")
    masked = 0
    for a, b in plan.masks:
        masked += b - a - bases[a:b].count(b"N")
        bases[a:b] = b"N" * (b - a)
    ref = bases.decode()
    v0, v1 = plan.variant
    alt = ref[:v0] + record.allele2 + ref[v1:]
    ref_at, alt_at = v0, v0
    if plan.reverse:
        ref, alt = reverse_complement(ref), reverse_complement(alt)
        ref_at, alt_at = len(ref) - v1, len(alt) - v0 - len(record.allele2)
    return EqtlWindow(_fit(ref, length), _fit(alt, length), record.label,
                      ref_at if ref_at + len(record.allele1) <= length else None,
                      alt_at if alt_at + len(record.allele2) <= length else None, masked, plan)


@dataclass
class EqtlSubset:
    """One subset of a tissue, opened from its config: plans with counts, and the genome to make windows."""
    config: EqtlConfig
    plans: WindowPlans
    genome: FastaGenome

    def __len__(self) -> int:
        return len(self.plans.plans)

    def window(self, index: int) -> EqtlWindow:
        return materialise(self.plans.plans[index], self.genome, self.plans.spec.length)


def load_eqtl_subset(config: EqtlConfig, subset: str, length: int | None = None,
                     on_ref_mismatch: str = "error") -> EqtlSubset:
    """Plans of `subset` ('train', 'valid', 'test') of a tissue from its config files; `length`
    (e.g. --window-bp) replaces the config's seq_len_cutoff for a scaled-down run."""
    genome = FastaGenome(config.genome_fa)
    spec = WindowSpec.from_config(config, length)
    plans = plan_windows(read_eqtl_records(config.eqtl_file), genome, TabixMasks(config.tabix_file), spec, subset,
                         on_ref_mismatch)
    return EqtlSubset(config, plans, genome)


def variant_region(plan: WindowPlan, genome: Genome, spec: WindowSpec) -> str:
    """The alt allele in its flanked region window ([region_start - up_r, region_end + down_r)),
    oriented as the plan's window: the short sequence a k-mer baseline reads instead of 450 kbp."""
    record = plan.record
    up = spec.region_flank_upstream
    ref = genome.fetch(record.region_chrom, record.region_start - up, record.region_end + spec.region_flank_downstream)
    alt = ref[:up] + record.allele2 + ref[up + record.region_end - record.region_start:]
    return reverse_complement(alt) if plan.reverse else alt
