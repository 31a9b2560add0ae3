"""Shard integrity: the sha256 of every shard, and reading shards with every sample checked.

manifest.json (format janus-shards-v2) lists each shard's sha256 and byte size beside its sample
count. A reader hashes a shard before its first read in a process (data.verify_shards; sha256
runs at about 0.9 GB/s on one core with SHA-NI, see docs/data.md), then checks every sample it
yields: the 'dna' and 'json' members are there, the json parses, the bases are A/C/G/T/N in
either case and as many as json says. The sample count is compared with the manifest's even
when hashing is off, because tarfile ends early without any error at a truncation on a member
boundary or at a damaged header: without the count, lost samples are silent.

data.on_corrupt decides what a problem does: 'error' raises ShardError naming the shard and the
sample key; 'skip' logs it, drops what cannot be trusted (the sample; the rest of a shard that
cannot be read further; the whole shard when its digest differs, since a flipped base cannot
be located) and counts the dropped samples in ShardReader.corrupt. A dropped sample leaves a
None in its place, so positions in a shard (which loader slot keeps which window) never move.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator

from webdataset.tariterators import group_by_keys, tar_file_expander

from janus_pretrain.digests import file_digest
from janus_pretrain.data.manifest import ManifestError

log = logging.getLogger(__name__)

ON_CORRUPT = ("error", "skip")
_BASES = b"ACGTNacgtn"  # what the sharder writes (IUPAC ambiguity codes became N)
_RESHARD = ("re-copy the shard directory or rerun janus shard (data_prep/shard_genomes.py) with the same arguments "
            "(it rebuilds damaged shards)")


class ShardError(ManifestError):
    """A damaged shard or sample: the message names the shard, the sample key and what to do."""


def shard_damage(path: str | Path, sha256: str, size: int) -> str | None:
    """Why the file at `path` is not the shard the manifest describes, or None when it is."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if actual != size:  # the size check is free and catches truncation without hashing
        return f"{actual} bytes, the manifest says {size} (truncated or overwritten)"
    if file_digest(path) != sha256:
        return "sha256 differs from the manifest's (damaged bytes)"
    return None


def sample_problem(sample: dict) -> str | None:
    """Why a sample read from a shard cannot be used, or None when it is sound."""
    for member in ("dna", "json"):
        if member not in sample:
            return f"missing the '{member}' member (members: {sorted(k for k in sample if not k.startswith('__'))})"
    try:
        meta = json.loads(sample["json"])
        length = int(meta["end"]) - int(meta["start"])
    except (ValueError, KeyError, TypeError) as exc:
        return f"its 'json' member is unreadable ({type(exc).__name__}: {exc})"
    dna = sample["dna"]
    if len(dna) != length or not dna:
        return f"'dna' holds {len(dna)} bases, its json says {length}"
    if dna.translate(None, _BASES):
        return "'dna' holds bytes other than A/C/G/T/N"
    return None


def _clean(exc: BaseException) -> str:
    # webdataset appends " @ <file object>" and the stream to the exception's args; keep the cause
    text = str(exc.args[0]) if exc.args else ""
    return f"{type(exc).__name__}: {text.split(' @ ')[0]}".rstrip(": ")


class ShardReader:
    """Samples of manifest shard entries (dicts with path, samples, and sha256/bytes in format v2)."""

    def __init__(self, verify: bool = True, on_corrupt: str = "error", verified: set[str] | None = None):
        """verified: shards already hashed in this process, shared by the readers of one worker."""
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"data.on_corrupt must be one of {list(ON_CORRUPT)}, got {on_corrupt!r}")
        self.verify, self.on_corrupt = verify, on_corrupt
        self.corrupt = 0  # samples dropped under on_corrupt=skip, since this reader was made
        self.hashed_bytes = 0  # bytes hashed for verification (tests and the cost estimate read it)
        self._verified: set[str] = set() if verified is None else verified  # hashed in this process: once each

    def windows(self, shards: list[dict]) -> Iterator[tuple[str, bytes] | None]:
        """(key, dna) of every sample, in shard order; None where a sample was dropped (skip mode)."""
        for shard in shards:
            yield from self.shard(shard)

    def _drop(self, path: str, key: str | None, problem: str, count: int) -> Iterator[None]:
        where = f"shard {path}" + (f", sample key {key}" if key else "")
        if self.on_corrupt == "error":
            raise ShardError(f"{where}: {problem}; {_RESHARD}, or set data.on_corrupt: skip to skip damaged samples")
        log.warning("%s: %s; skipped %d sample(s) (data.on_corrupt: skip)", where, problem, count)
        self.corrupt += count
        for _ in range(count):
            yield None

    def shard(self, shard: dict) -> Iterator[tuple[str, bytes] | None]:
        path, expected = shard["path"], int(shard["samples"])
        if self.verify and "sha256" in shard and path not in self._verified:
            self.hashed_bytes += os.path.getsize(path) if os.path.isfile(path) else 0
            damage = shard_damage(path, shard["sha256"], int(shard["bytes"]))
            if damage:
                yield from self._drop(path, None, damage, expected)
                return
            self._verified.add(path)
        count, last = 0, None
        failure: list[BaseException] = []

        def stop(exc: BaseException) -> bool:  # webdataset handler: remember the cause, stop reading
            failure.append(exc)
            return False

        try:
            with open(path, "rb") as handle:
                files = tar_file_expander([{"url": path, "stream": handle}], handler=stop)
                for sample in group_by_keys(files, handler=stop):
                    if failure:  # a sample cut short by the failure: reported below as unreadable
                        break
                    key = sample["__key__"]
                    if count == expected:
                        yield from self._drop(path, key, f"more samples than the {expected} the manifest lists", 0)
                        return
                    count += 1
                    problem = sample_problem(sample)
                    if problem:
                        yield from self._drop(path, key, problem, 1)
                        continue
                    last = key
                    yield key, sample["dna"]
        except OSError as exc:
            failure.append(exc)
        after = f"after sample key {last}" if last else "before its first sample"
        if failure:
            yield from self._drop(path, None, f"unreadable {after} ({_clean(failure[0])})", expected - count)
        elif count < expected:
            yield from self._drop(path, None, f"{count} samples, the manifest lists {expected}: the tar ends early "
                                  f"{after} (truncated or damaged header)", expected - count)
