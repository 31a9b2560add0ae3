"""Atomic file writes: write under a temporary name beside the target, then rename over it.

A reader (or a resumed run) therefore sees the old file or the complete new one, never a
half-written file.
"""
from __future__ import annotations

import json

import os
import re
from pathlib import Path


def temporary_path(path: str | Path) -> Path:
    """Hidden, per-process temporary name in the target's directory (same filesystem: rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_text(path: str | Path, text: str, durable: bool = False) -> None:
    """Replace `path` with `text` atomically; durable=True also fsyncs before the rename."""
    tmp = temporary_path(path)
    with open(tmp, "w") as handle:
        handle.write(text)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


_TEMPORARY = re.compile(r"\.tmp\d*$")  # temporary_path's names, and older writers' 'NAME.tmp<pid>' / 'NAME.tmp'


def remove_orphaned_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left anywhere under `directory`; returns them.

    A temporary file is never renamed into place by anyone but the process that wrote it, so once
    that process is gone it is garbage; call this only while no other writer works in `directory`.
    """
    removed = []
    for path in sorted(Path(directory).rglob("*.tmp*")):
        if path.is_file() and _TEMPORARY.search(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_json(path: Path, error: type[Exception], missing: str):
    """A JSON file this package wrote (atomically): `error(missing)` when it is absent, and
    `error` naming the file when it does not parse."""
    if not path.is_file():
        raise error(missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
