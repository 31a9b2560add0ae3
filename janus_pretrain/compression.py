"""How an input file is compressed, told from its first bytes rather than its name.

Users name files freely (.fa.gz that is plain, .fa that is bgzip), so every reader of genomes,
FASTA references and VCFs sniffs the magic bytes instead of trusting the suffix.
"""
from __future__ import annotations

from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"
HEAD_BYTES = 18  # enough for the gzip header and the BGZF 'BC' extra subfield


def compression_of_bytes(head: bytes) -> str:
    """'plain', 'gzip' or 'bgzip' for a file starting with `head` (its first HEAD_BYTES or more)."""
    if head[:2] != GZIP_MAGIC:
        return "plain"
    # BGZF: gzip with the FEXTRA flag and a 'BC' subfield (SAM/BAM spec, section 4.1)
    return "bgzip" if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC" else "gzip"


# the empty block every BGZF writer ends a file with (SAM/BAM spec, section 4.1.2): gzip readers stop
# cleanly at any block boundary, so without it a file cut between blocks reads as a shorter genome
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def bgzf_eof_missing(path: str | Path) -> bool:
    """True when a bgzip file does not end with the BGZF end-of-file block (it was cut short)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - len(BGZF_EOF)))
        return handle.read() != BGZF_EOF


def compression_of_file(path: str | Path) -> str:
    """'plain', 'gzip' or 'bgzip'; an empty file is 'plain'."""
    with open(path, "rb") as handle:
        return compression_of_bytes(handle.read(HEAD_BYTES))


def is_gzip(path: str | Path) -> bool:
    """True for gzip and bgzip (BGZF is gzip-compatible)."""
    return compression_of_file(path) != "plain"
