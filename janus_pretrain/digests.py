"""File digests recorded where we write and checked where we read (checkpoints, exports, shards,
evaluation task files)."""
from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST = "sha256"


def file_digest(path: str | Path) -> str:
    """sha256 of a file; hashlib streams it (flat memory for GB files, about 0.5-1 GB/s per core).
    A directory (a Genomic Benchmarks split) digests its files' relative names and contents, sorted."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.new(DIGEST)
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode() + b"\0")
            digest.update(hashlib.new(DIGEST, child.read_bytes()).digest())
        return digest.hexdigest()
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, DIGEST).hexdigest()
