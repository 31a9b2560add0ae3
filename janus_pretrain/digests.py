"""File digests recorded where we write and checked where we read (checkpoints, exports, shards)."""
from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST = "sha256"


def file_digest(path: str | Path) -> str:
    """sha256 of a file; hashlib streams it (flat memory for GB files, about 0.5-1 GB/s per core)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, DIGEST).hexdigest()
