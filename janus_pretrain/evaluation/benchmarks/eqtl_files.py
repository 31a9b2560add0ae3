"""DNALongBench eQTL files: the per-tissue config and its variant-gene TSV.

The download (DNALongBench, dataverse doi:10.7910/DVN/YUP2G5) unpacks to an eQTL directory:

    eQTL/config/gtex_hg38.<Tissue>.config    lines 'KEY VALUE TYPE' (TYPE: int, float, bool, str, list)
    eQTL/<eQTL_file>                         TSV named by the config, one variant-gene pair per row
    eQTL/<eQTL_tabix_file>                   bgzip + tabix file of eQTL regions (masked between TSS and variant)
    eQTL/<genome_fa>                         hg38 FASTA (the README gunzips seqs/hg38.fa.gz)

Paths in the config are relative to the eQTL directory (the official loader's root_path). The TSV
has a header naming at least REQUIRED_COLUMNS (others are ignored); coordinates are 0-based,
half-open: allele1 is the genome at [region_start, region_end).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from janus_pretrain.atomic_io import read_text
from janus_pretrain.downstream.tsv import TableError
from janus_pretrain.tokenizer import first_invalid

REQUIRED_COLUMNS = ("gene_chrom", "gene_start", "gene_end", "region_chrom", "region_start", "region_end", "gene_id",
                    "gene_strand", "region_id", "target", "subset", "allele1", "allele2")
TARGETS = {"positive": 1, "negative": 0}
SUBSETS = ("train", "valid", "test")
CONFIG_KEYS = ("genome_fa", "eQTL_file", "eQTL_tabix_file", "tss_flank_upstream", "tss_flank_downstream",
               "region_flank_upstream", "region_flank_downstream")
DEFAULT_CUTOFF = 450_000  # used when the config has no seq_len_cutoff (DNAlong_benchmark.py:1010)


def config_path(eqtl_dir: str | Path, tissue: str) -> Path:
    """Where the official loader finds a tissue's config (genomics.py:684-685)."""
    return Path(eqtl_dir) / "config" / f"gtex_hg38.{tissue}.config"


@dataclass(frozen=True)
class EqtlConfig:
    path: Path  # the config file
    root: Path  # the eQTL directory its paths are relative to
    genome_fa: Path
    eqtl_file: Path
    tabix_file: Path
    tss_flank_upstream: int
    tss_flank_downstream: int
    region_flank_upstream: int
    region_flank_downstream: int
    seq_len_cutoff: int
    values: dict  # every key as written (typed)


def _typed(value: str, kind: str, where: str):
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise TableError(f"{where}: {value!r} is not a {kind}") from None
    if kind == "bool":
        return value.lower() in ("1", "true", "yes")
    if kind == "list":
        return value.split(",")
    return value


def read_eqtl_config(path: str | Path, root: str | Path | None = None) -> EqtlConfig:
    """A tissue config; `root` defaults to the directory above config/ (the eQTL directory)."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: config file not found (expected <eQTL dir>/config/gtex_hg38.<Tissue>.config)")
    root = Path(root) if root is not None else path.parent.parent
    values = {}
    for line_no, line in enumerate(read_text(path, TableError).splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2:
            raise TableError(f"{path} line {line_no}: expected 'KEY VALUE TYPE', got {line.strip()!r}")
        kind = fields[2] if len(fields) > 2 else "str"
        values[fields[0]] = _typed(fields[1], kind, f"{path} line {line_no}, key '{fields[0]}'")
    missing = [key for key in CONFIG_KEYS if key not in values]
    if missing:
        raise TableError(f"{path}: missing keys {missing} (an eQTL config names {list(CONFIG_KEYS)})")
    for key in CONFIG_KEYS[3:] + ("seq_len_cutoff",):
        if key in values and (not isinstance(values[key], int) or values[key] < 0):
            raise TableError(f"{path}, key '{key}': {values[key]!r} must be a non-negative int (TYPE int)")
    return EqtlConfig(path, root, root / values["genome_fa"], root / values["eQTL_file"], root / values["eQTL_tabix_file"],
                      values["tss_flank_upstream"], values["tss_flank_downstream"], values["region_flank_upstream"],
                      values["region_flank_downstream"], values.get("seq_len_cutoff", DEFAULT_CUTOFF), values)


@dataclass(frozen=True)
class EqtlRecord:
    """One variant-gene pair (0-based half-open coordinates)."""
    gene_chrom: str
    gene_start: int
    gene_end: int
    region_chrom: str
    region_start: int
    region_end: int
    gene_id: str
    gene_strand: str  # '+' or '-'; anything else is skipped by the window builder (as official)
    region_id: str
    label: int  # target: positive = 1, negative = 0
    subset: str  # train, valid or test
    allele1: str  # the reference at [region_start, region_end), upper case
    allele2: str  # the alternative allele, upper case
    where: str  # 'FILE line N' for messages


def _int_field(value: str, where: str, column: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise TableError(f"{where}, column '{column}': {value!r} is not an integer coordinate") from None
    if number < 0:
        raise TableError(f"{where}, column '{column}': {number} is negative")
    return number


def _allele(value: str, where: str, column: str) -> str:
    allele = value.strip().upper()
    if not allele:
        raise TableError(f"{where}, column '{column}': empty allele")
    bad = first_invalid(allele)
    if bad is not None:
        raise TableError(f"{where}, column '{column}': invalid DNA character {bad[1]!r} in allele {value!r}")
    return allele


def parse_record(row: dict, where: str) -> EqtlRecord:
    """One TSV row (a dict by header) as a checked record; errors name `where` and the column."""
    ints = {c: _int_field(row[c].strip(), where, c) for c in ("gene_start", "gene_end", "region_start", "region_end")}
    for start, end in (("gene_start", "gene_end"), ("region_start", "region_end")):
        if ints[end] <= ints[start]:
            raise TableError(f"{where}, column '{end}': {ints[end]} is not after {start} {ints[start]} "
                             f"(coordinates are 0-based, half-open)")
    target = row["target"].strip()
    if target not in TARGETS:
        raise TableError(f"{where}, column 'target': {target!r}, expected 'positive' or 'negative'")
    subset = row["subset"].strip()
    if subset not in SUBSETS:
        raise TableError(f"{where}, column 'subset': {subset!r}, expected one of {SUBSETS}")
    return EqtlRecord(row["gene_chrom"].strip(), ints["gene_start"], ints["gene_end"], row["region_chrom"].strip(),
                      ints["region_start"], ints["region_end"], row["gene_id"].strip(), row["gene_strand"].strip(),
                      row["region_id"].strip(), TARGETS[target], subset, _allele(row["allele1"], where, "allele1"),
                      _allele(row["allele2"], where, "allele2"), where)


def read_eqtl_records(path: str | Path) -> list[EqtlRecord]:
    """Every row of an eQTL TSV, checked (all subsets; the window builder picks one)."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: eQTL table not found")
    with io.StringIO(read_text(path, TableError), newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise TableError(f"{path} line 1: header lacks columns {missing} (an eQTL table has {list(REQUIRED_COLUMNS)})")
        records = []
        for line_no, fields in enumerate(reader, start=2):
            if not fields or all(not f.strip() for f in fields):
                continue
            where = f"{path} line {line_no}"
            if len(fields) != len(header):
                raise TableError(f"{where}: {len(fields)} fields, the header has {len(header)}")
            records.append(parse_record(dict(zip(header, fields)), where))
    if not records:
        raise TableError(f"{path}: no rows after the header")
    return records
