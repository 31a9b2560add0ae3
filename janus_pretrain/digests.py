"""File digests recorded where we write and checked where we read (checkpoints, exports, shards)."""
from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST = "sha256"
_CHUNK = 8 << 20


def file_digest(path: str | Path) -> str:
    """sha256 of a file, streamed in 8 MiB chunks (hashlib releases the GIL: about 1-2 GB/s per core)."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
