"""Indexed FASTA access through pyfaidx, with errors that say what to do.

pyfaidx indexes plain and BGZF-compressed files (the latter needs Biopython); a plain gzip file
cannot be indexed at all, so it is refused up front with the commands that fix it.
"""
from __future__ import annotations

from pathlib import Path

import pyfaidx

from janus_pretrain.compression import is_gzip


class FastaError(ValueError):
    """A FASTA file or a region of it that cannot be read; names the file and contig."""


def open_fasta(path: str | Path) -> pyfaidx.Fasta:
    """pyfaidx.Fasta returning raw strings (case kept); builds the .fai index next to the file."""
    path = Path(path)
    if not path.is_file():
        raise FastaError(f"FASTA file not found: {path}")
    if is_gzip(path):
        try:
            return pyfaidx.Fasta(str(path), as_raw=True, sequence_always_upper=False)
        except Exception as exc:  # plain gzip, or BGZF without Biopython
            raise FastaError(f"{path}: cannot index this compressed FASTA ({exc}). Random access needs a plain "
                             f"file (`gunzip -k {path}`) or a bgzip-compressed one (`gunzip -c {path} | bgzip > "
                             f"{path.with_suffix('')}.bgz`, and `pip install biopython`)") from None
    try:
        return pyfaidx.Fasta(str(path), as_raw=True, sequence_always_upper=False)
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
