"""Atomic file writes: write under a temporary name beside the target, then rename over it.

A reader (or a resumed run) therefore sees the old file or the complete new one, never a
half-written file. The readers of text files (read_text, read_json) turn what a user can do to
a file (binary bytes, another encoding, a directory or a dangling link in its place, no read
permission) into the caller's one-line error naming the file.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from pathlib import Path
from typing import Iterator

from janus_pretrain.compression import is_gzip


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


def not_text(path: str | Path, exc: UnicodeDecodeError, first_line: int = 1) -> str:
    """The one-line wording of a file that is not UTF-8 text, naming the line and column of the
    first bad byte; exc comes from decoding the whole file or, for a streaming reader, the line
    `first_line` (and the ones after it)."""
    data = exc.object
    line = first_line + data.count(b"\n", 0, exc.start)
    column = exc.start - data.rfind(b"\n", 0, exc.start)
    utf16 = first_line == 1 and data[:2] in (b"\xff\xfe", b"\xfe\xff")
    return (f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start:exc.start + 1].hex()} at column {column}"
            f"{'; it looks like UTF-16' if utf16 else ''}); save it as UTF-8")


def read_text(path: str | Path, error: type[Exception], missing: str | None = None) -> str:
    """A text file's contents (UTF-8): `error(missing)` when it is absent or not a file, and
    `error` naming the file (and line) when it cannot be read or is not UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise error(missing or f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(not_text(path, exc)) from None


def text_lines(path: str | Path, error: type[Exception]) -> Iterator[tuple[int, str]]:
    """(line number, text with its newline) of a plain or gzipped text file, decoded line by line, so
    that a big file streams and a byte that is not UTF-8, or a damaged gzip stream, is `error`
    naming the line. The caller checks that the path is a file."""
    path = Path(path)
    line_no = 0
    try:
        with gzip.open(path, "rb") if is_gzip(path) else path.open("rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                yield line_no, raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(not_text(path, exc, first_line=line_no)) from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise error(f"{path} line {line_no + 1}: cannot be read ({exc}); re-download or re-compress it") from None


def read_json(path: Path, error: type[Exception], missing: str) -> dict:
    """A JSON object file this package wrote (atomically): `error(missing)` when it is absent, and
    `error` naming the file when it is not text, does not parse or is not an object."""
    text = read_text(path, error, missing)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: the top level is a JSON {type(value).__name__}, expected an object")
    return value
