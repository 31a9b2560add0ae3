"""One checked pass over a genome FASTA (plain, gzip or bgzip) into an indexed plain cache copy.

Every input is streamed once: decompressed, checked line by line in large vectorised chunks
(headers, duplicate contig names, characters outside IUPAC, CRLF accepted), and written to
OUT/.cache/ as plain FASTA with one sequence line per contig. pyfaidx then indexes that copy
for random access by the sharding workers. Streaming every input (rather than reading bgzip
through pyfaidx) keeps one code path, needs no Biopython, and the check pass is needed anyway
to name the line of a bad character.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyfaidx
from tqdm import tqdm

from janus_pretrain.digests import file_digest
from janus_pretrain.atomic_io import atomic_write_text, temporary_path
from janus_pretrain.compression import bgzf_eof_missing, compression_of_file
from janus_pretrain.data.genomes import DataPrepError
from janus_pretrain.tokenizer import NUCLEOTIDE_CODES

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20
_ALLOWED_BYTES = (NUCLEOTIDE_CODES + NUCLEOTIDE_CODES.lower() + "\r\n").encode()  # CRLF accepted
_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[np.frombuffer(_ALLOWED_BYTES, dtype=np.uint8)] = True
_CHECK = bytes(ord("A") if ok else ord("!") for ok in _ALLOWED)  # translate table: not allowed -> '!'
_PRINTABLE = re.compile(rb"[\x21-\x7e]+")  # printable ASCII without space


@dataclass
class FastaInfo:
    source: str  # the input file as given
    sha256: str  # checksum of the input file bytes
    compression: str  # plain, gzip or bgzip
    cache: str  # plain FASTA copy indexed by pyfaidx
    contigs: list[tuple[str, int]] = field(default_factory=list)  # (name, length), file order, empty ones left out
    warnings: list[str] = field(default_factory=list)


def compression_of(path: Path) -> str:
    if path.stat().st_size == 0:
        raise DataPrepError(f"{path}: empty file (expected a FASTA genome)")
    return compression_of_file(path)


class _Scanner:
    """State of the streaming check: current contig, line numbers, names seen."""

    def __init__(self, path: Path, out):
        self.path, self.out = path, out
        self.line = 0  # lines fully consumed so far
        self.name: str | None = None
        self.name_line = 0
        self.length = 0
        self.header_pending = b""
        self.seen: dict[str, int] = {}
        self.contigs: list[tuple[str, int]] = []
        self.warnings: list[str] = []
        self.offset = 0  # bytes written to the cache copy
        self.fai: list[str] = []  # samtools faidx lines of the cache copy

    def close_contig(self) -> None:
        if self.name is None:
            return
        if self.length == 0:
            message = f"{self.path}:{self.name_line}: contig '{self.name}' is empty; skipped"
            log.warning(message)
            self.warnings.append(message)
        else:
            self.out.write(b"\n")
            self.fai.append(f"{self.name}\t{self.length}\t{self.offset}\t{self.length}\t{self.length + 1}\n")
            self.offset += self.length + 1
            self.contigs.append((self.name, self.length))

    def header(self, raw: bytes) -> None:
        self.close_contig()
        line = self.line + 1
        words = raw[1:].split(None, 1)  # the name is the first word (FASTA convention), kept byte for byte
        if not words:
            raise DataPrepError(f"{self.path}:{line}: FASTA header without a contig name")
        if not _PRINTABLE.fullmatch(words[0]):
            raise DataPrepError(f"{self.path}:{line}: contig name {words[0]!r} holds non-ASCII or control bytes; "
                                f"rename the contig (names go byte for byte into sample metadata and manifests)")
        name = words[0].decode("ascii")
        if name in self.seen:
            raise DataPrepError(f"{self.path}:{line}: duplicate contig name '{name}' "
                                f"(first at line {self.seen[name]})")
        self.seen[name] = line
        self.name, self.name_line, self.length = name, line, 0
        self.header_pending = b">" + name.encode() + b"\n"
        self.line += 1

    def sequence(self, raw: bytes) -> None:
        if not raw:
            return
        if self.name is None and raw.strip():
            raise DataPrepError(f"{self.path}:{self.line + 1}: not FASTA: expected a '>' header line first")
        joined = raw.replace(b"\n", b"")  # memchr-fast, unlike translate with deletions
        newlines = len(raw) - len(joined)
        bases = joined.replace(b"\r", b"") if b"\r" in joined else joined
        if b"!" in bases.translate(_CHECK):  # C-speed check; numpy only to locate the culprit
            codes = np.frombuffer(raw, dtype=np.uint8)
            pos = int(np.flatnonzero(~_ALLOWED[codes])[0])
            line = self.line + raw.count(b"\n", 0, pos) + 1
            column = pos - (raw.rfind(b"\n", 0, pos) + 1) + 1
            raise DataPrepError(f"{self.path}:{line}: invalid character {chr(codes[pos])!r} at column {column} "
                                f"of contig '{self.name}': sequence lines may hold only IUPAC nucleotide codes")
        if bases:
            if self.header_pending:
                self.out.write(self.header_pending)
                self.offset += len(self.header_pending)
                self.header_pending = b""
            self.out.write(bases)
            self.length += len(bases)
        self.line += newlines

    def feed(self, buf: bytes) -> None:
        """buf holds whole lines only (ends with a newline, or is the file's last piece)."""
        pos = _next_header(buf, 0)
        self.sequence(buf[:pos])
        while pos < len(buf):  # here buf[pos] starts a header line
            end = buf.find(b"\n", pos) + 1 or len(buf)
            self.header(buf[pos:end])
            nxt = _next_header(buf, end)
            self.sequence(buf[end:nxt])
            pos = nxt


def _next_header(buf: bytes, start: int) -> int:
    """Start of the first header line at or after `start` (a line start), else len(buf)."""
    pos = buf.find(b">", start)  # one-byte find is memchr-fast; '>' is rare outside headers
    while pos > start and buf[pos - 1] != 0x0A:
        pos = buf.find(b">", pos + 1)
    return len(buf) if pos < 0 else pos


def _stream(path: Path, compression: str):
    opener = gzip.open if compression != "plain" else open
    try:
        with opener(path, "rb") as handle:
            carry = b""
            while True:
                chunk = handle.read(CHUNK_BYTES)
                if not chunk:
                    break
                buf = carry + chunk
                cut = buf.rfind(b"\n") + 1
                if cut == 0:
                    carry = buf
                    continue
                carry = buf[cut:]
                yield buf[:cut]
            if carry:
                yield carry
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataPrepError(f"{path}: truncated or corrupt gzip file ({exc}); re-download or re-compress it") from None


def cache_files(cache_dir: Path, tag: str, sha256: str) -> tuple[Path, Path, Path]:
    """The files scan_fasta writes for one input into cache_dir: the plain copy, its faidx index and
    the .scan.json that marks both complete (their temporaries: atomic_io's temporary names)."""
    cache = Path(cache_dir) / f"{tag}-{sha256[:16]}.fa"
    return cache, Path(str(cache) + ".fai"), cache.with_suffix(".scan.json")


def remove_cache_files(cache_dir: Path, entries: list[tuple[str, str]]) -> None:
    """Delete what scan_fasta wrote for (tag, sha256) entries, then cache_dir itself if that left
    it empty: never anything else a user keeps there."""
    for tag, sha256 in entries:
        for path in cache_files(cache_dir, tag, sha256):
            path.unlink(missing_ok=True)
    try:
        Path(cache_dir).rmdir()
    except OSError:
        pass  # absent, or holds files that are not ours


def scan_fasta(path: str | Path, cache_dir: str | Path, tag: str, sha256: str | None = None) -> FastaInfo:
    """Check `path` and write its plain, indexed cache copy (reused when already complete)."""
    path = Path(path)
    if not path.is_file():
        raise DataPrepError(f"FASTA file not found: {path}")
    sha256 = sha256 or file_digest(path)
    compression = compression_of(path)
    if compression == "bgzip" and bgzf_eof_missing(path):
        raise DataPrepError(f"{path}: bgzip file without the BGZF end-of-file block: it was cut short (possibly "
                            f"exactly between blocks, which gzip readers take as the end); re-download or "
                            f"re-compress it")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache, _, done = cache_files(cache_dir, tag, sha256)
    if done.is_file() and cache.is_file():
        info = json.loads(done.read_text())
        return FastaInfo(**{**info, "contigs": [tuple(c) for c in info["contigs"]]})
    how = "read as plain text" if compression == "plain" else f"{compression}: streamed through gzip"
    log.info("%s: %s, checked and copied to %s for pyfaidx indexed access", path, how, cache)
    tmp = temporary_path(cache)
    with open(tmp, "wb") as out:
        scanner = _Scanner(path, out)
        saw_any = False
        progress = tqdm(desc=f"checking {path.name}", unit="B", unit_scale=True, disable=None, leave=False)
        for buf in _stream(path, compression):
            progress.update(len(buf))
            if not saw_any:
                first = buf.lstrip()
                if first and not first.startswith(b">"):
                    raise DataPrepError(f"{path}:1: not FASTA: the first line must be a '>' header "
                                        f"(starts with {buf[:20]!r})")
                saw_any = saw_any or bool(first)
            scanner.feed(buf)
        scanner.close_contig()
        progress.close()
    if not saw_any:
        tmp.unlink()
        raise DataPrepError(f"{path}: empty file (no FASTA records after decompression)")
    if not scanner.contigs:
        tmp.unlink()
        raise DataPrepError(f"{path}: every contig is empty; nothing to shard")
    # the copy has one sequence line per contig, so its faidx index is known without re-reading it
    # (the .scan.json written last is what marks the copy and its index complete)
    os.replace(tmp, cache)
    atomic_write_text(cache_files(cache_dir, tag, sha256)[1], "".join(scanner.fai))
    info = FastaInfo(str(path), sha256, compression, str(cache), scanner.contigs, scanner.warnings)
    atomic_write_text(done, json.dumps(info.__dict__))
    return info


class WindowReader:
    """Bases of [start, end) of a contig from the plain cache copy, case kept.

    pyfaidx parses the index; since the cache copy holds each contig on one line, the bases are
    one contiguous byte range, read directly (pyfaidx's str slicing would decode and re-encode).
    """

    def __init__(self, cache: str):
        self.index = pyfaidx.Faidx(cache, rebuild=False).index
        self.handle = open(cache, "rb")

    def fetch(self, contig: str, start: int, end: int) -> bytes:
        record = self.index[contig]
        if record.lenc != record.rlen:
            raise ValueError(f"{self.handle.name}: contig '{contig}' is not on one line; rebuild the cache")
        self.handle.seek(record.offset + start)
        return self.handle.read(min(end, record.rlen) - start)

    def close(self) -> None:
        self.handle.close()
