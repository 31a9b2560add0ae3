"""Indexed FASTA access through pyfaidx, with errors that say what to do.

pyfaidx indexes plain files. A gzip or bgzip file is checked and decompressed once, by the same
streaming pass the sharding uses (data/fasta_cache.py), into a plain copy in the FASTA cache,
keyed by the file's sha256 and reused on later runs: $JANUS_CACHE_DIR, else
$XDG_CACHE_HOME/janus-pretrain/fasta, else ~/.cache/janus-pretrain/fasta.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyfaidx

from janus_pretrain.compression import is_gzip


class FastaError(ValueError):
    """A FASTA file or a region of it that cannot be read; names the file and contig."""


def cache_dir() -> Path:
    """Where plain copies of compressed FASTA files go (see the module docstring)."""
    if os.environ.get("JANUS_CACHE_DIR"):
        return Path(os.environ["JANUS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "janus-pretrain" / "fasta"


def plain_copy(path: Path) -> Path:
    """The checked, decompressed, indexed copy of compressed FASTA `path` (made on first use)."""
    from janus_pretrain.data.fasta_cache import scan_fasta
    from janus_pretrain.data.genomes import DataPrepError

    try:
        return Path(scan_fasta(path, cache_dir(), path.name.split(".")[0]).cache)
    except DataPrepError as exc:
        raise FastaError(str(exc)) from None
    except OSError as exc:
        raise FastaError(f"{path}: cannot write its decompressed copy to {cache_dir()} ({exc.strerror or exc}); "
                         f"set JANUS_CACHE_DIR to a writable directory") from None


def open_fasta(path: str | Path) -> pyfaidx.Fasta:
    """pyfaidx.Fasta returning raw strings (case kept); builds the .fai index next to a plain file."""
    path = Path(path)
    if not path.is_file():
        raise FastaError(f"FASTA file not found: {path}")
    readable = plain_copy(path) if is_gzip(path) else path
    try:
        return pyfaidx.Fasta(str(readable), as_raw=True, sequence_always_upper=False)
    except Exception as exc:
        raise FastaError(f"{path}: not a readable FASTA file ({exc})") from None


def contig_length(fasta: pyfaidx.Fasta, name: str, where: str = "") -> int:
    if name not in fasta.keys():
        known = list(fasta.keys())
        raise FastaError(f"{where}contig {name!r} is not in {fasta.filename} "
                         f"(contigs: {known[:10]}{' ...' if len(known) > 10 else ''})")
    return len(fasta[name])


def fetch(fasta: pyfaidx.Fasta, name: str, start: int, end: int) -> str:
    """Bases [start, end) of contig `name`, 0-based half-open, case kept."""
    return str(fasta[name][start:end])
