"""Genome list (GENOMES.yaml) for data_prep/shard_genomes.py: parsed, checked, with line numbers.

species:
  - name: scer                 # short id used in keys and metrics
    fasta: path/scer.fna.gz    # plain, gzip or bgzip; relative to the YAML file
    weight: 1.0                # default mixture weight (a run may override)
    valid_contigs: [chrX]      # optional: whole contigs held out
    test_contigs: []
    valid_fraction: 0.05       # optional: a contiguous block at each other contig's end
    test_fraction: 0.05
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from janus_pretrain.atomic_io import read_text
from janus_pretrain.config_schema import yaml_problem


class DataPrepError(ValueError):
    """Bad input to the sharding CLI: the message names the file and the line, key or contig."""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
_KEYS = {"name", "fasta", "weight", "valid_contigs", "test_contigs", "valid_fraction", "test_fraction"}


@dataclass
class SpeciesSpec:
    name: str  # short id: shard names, sample keys, metrics
    fasta: Path  # absolute path of the genome FASTA
    weight: float = 1.0  # default mixture weight
    valid_contigs: list[str] = field(default_factory=list)  # whole contigs held out for validation
    test_contigs: list[str] = field(default_factory=list)  # whole contigs held out for test
    valid_fraction: float = 0.0  # block at the end of every other contig held out for validation
    test_fraction: float = 0.0  # block at the very end of every other contig held out for test
    line: int = 0  # line of this entry in the YAML file (for messages)

    def describe(self) -> dict:
        return {"name": self.name, "fasta": str(self.fasta), "weight": self.weight,
                "valid_contigs": self.valid_contigs, "test_contigs": self.test_contigs,
                "valid_fraction": self.valid_fraction, "test_fraction": self.test_fraction}


def _entry_lines(text: str) -> list[int]:
    """1-based line of each item under `species:` (yaml.safe_load drops positions)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "species" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _number(entry: dict, key: str, default: float, where: str) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataPrepError(f"{where}: '{key}' must be a number, got {value!r}")
    if not math.isfinite(value):  # YAML's .nan would pass every range check below
        raise DataPrepError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _names(entry: dict, key: str, where: str) -> list[str]:
    value = entry.get(key) or []
    if not isinstance(value, list):
        raise DataPrepError(f"{where}: '{key}' must be a list of contig names, got {value!r}")
    for name in value:
        # YAML reads 1.10 as the float 1.1 and 01 as 1: str() would not give the contig's name back
        if not isinstance(name, str):
            raise DataPrepError(f"{where}: '{key}' entry {name!r} is a {type(name).__name__} in YAML, not a "
                                f"contig name; quote it as written in the FASTA header (e.g. '1.10', not 1.10)")
    return list(value)


def read_genomes(path: str | Path) -> list[SpeciesSpec]:
    """Parse and check GENOMES.yaml; every problem names the file and the line of the entry."""
    path = Path(path)
    text = read_text(path, DataPrepError, f"genome list not found: {path}")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataPrepError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("species"), list) or not raw["species"]:
        raise DataPrepError(f"{path}: expected a top-level 'species:' list with at least one entry")
    unknown_top = set(raw) - {"species"}
    if unknown_top:
        raise DataPrepError(f"{path}: unknown top-level key(s) {sorted(unknown_top)}; only 'species' is allowed")
    lines = _entry_lines(text)
    specs: list[SpeciesSpec] = []
    first_line: dict[str, int] = {}
    for i, entry in enumerate(raw["species"]):
        line = lines[i] if i < len(lines) else 0
        where = f"{path}:{line}"
        if not isinstance(entry, dict):
            raise DataPrepError(f"{where}: each species entry must be a mapping with name and fasta")
        unknown = set(entry) - _KEYS
        if unknown:
            raise DataPrepError(f"{where}: unknown key(s) {sorted(unknown)} (known: {', '.join(sorted(_KEYS))})")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise DataPrepError(f"{where}: 'name' must be a short id of letters, digits and '_' (got {name!r})")
        if name in first_line:
            raise DataPrepError(f"{where}: species '{name}' listed twice (first at line {first_line[name]})")
        first_line[name] = line
        fasta = entry.get("fasta")
        if not isinstance(fasta, str) or not fasta:
            raise DataPrepError(f"{where}: species '{name}' needs a 'fasta' path")
        spec = SpeciesSpec(
            name=name, fasta=(path.parent / fasta).resolve(), weight=_number(entry, "weight", 1.0, where),
            valid_contigs=_names(entry, "valid_contigs", where), test_contigs=_names(entry, "test_contigs", where),
            valid_fraction=_number(entry, "valid_fraction", 0.0, where),
            test_fraction=_number(entry, "test_fraction", 0.0, where), line=line)
        if spec.weight < 0:
            raise DataPrepError(f"{where}: 'weight' must be >= 0 (got {spec.weight})")
        if not (0 <= spec.valid_fraction < 1 and 0 <= spec.test_fraction < 1
                and spec.valid_fraction + spec.test_fraction < 1):
            raise DataPrepError(f"{where}: valid_fraction and test_fraction must be in [0, 1) with a sum < 1")
        both = set(spec.valid_contigs) & set(spec.test_contigs)
        if both:
            raise DataPrepError(f"{where}: contig(s) {sorted(both)} are in both valid_contigs and test_contigs")
        if not spec.fasta.is_file():
            raise DataPrepError(f"{where}: FASTA file of species '{name}' not found: {spec.fasta}")
        specs.append(spec)
    return specs
