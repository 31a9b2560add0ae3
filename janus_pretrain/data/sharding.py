"""Plan and write WebDataset shards of genome windows (the work behind data_prep/shard_genomes.py).

Every shard is planned up front (which windows of which contigs) from contig lengths alone, so a
shard is a pure function of the arguments: workers write shards in any order, a rerun skips the
shards already renamed into place, and reruns are byte-identical (tar members get mtime 0).
Train windows are assigned to shards in a seeded permutation so that each train shard samples
the whole genome; valid and test shards keep genome order.
"""
from __future__ import annotations

import json
import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import webdataset as wds

from janus_pretrain.atomic_io import atomic_write_text, temporary_path
from janus_pretrain.data.fasta_cache import FastaInfo, WindowReader
from janus_pretrain.data.genomes import DataPrepError, SpeciesSpec
from janus_pretrain.data.manifest import SPLITS
from janus_pretrain.data.shard_integrity import shard_damage
from janus_pretrain.digests import file_digest
from janus_pretrain.tokenizer import normalise_bases, soft_mask

log = logging.getLogger(__name__)

SAMPLE_OVERHEAD_BYTES = 1536  # tar headers of .dna and .json plus the padded json member


@dataclass
class Window:
    contig: str
    start: int
    end: int


@dataclass
class ShardPlan:
    species: str
    split: str
    index: int
    windows: list[Window]
    cache: str  # plain FASTA cache copy to read from
    source: str  # input file name recorded in each sample's json
    sha256: str  # input checksum recorded in each sample's json
    max_n_frac: float

    @property
    def name(self) -> str:
        return f"{self.split}/{self.species}-{self.index:06d}.tar"

    @property
    def bp(self) -> int:
        return sum(w.end - w.start for w in self.windows)


@dataclass
class SpeciesPlan:
    shards: dict[str, list[ShardPlan]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    dropped_short: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})


def split_regions(spec: SpeciesSpec, contigs: list[tuple[str, int]]) -> list[tuple[str, str, int, int]]:
    """(split, contig, start, end) blocks; held-out contigs whole, else valid/test blocks at the end."""
    regions = []
    for name, length in contigs:
        if name in spec.valid_contigs or name in spec.test_contigs:
            regions.append(("valid" if name in spec.valid_contigs else "test", name, 0, length))
            continue
        n_test = int(round(length * spec.test_fraction))
        n_valid = int(round(length * spec.valid_fraction))
        train_end, valid_end = length - n_test - n_valid, length - n_test
        for split, start, end in (("train", 0, train_end), ("valid", train_end, valid_end), ("test", valid_end, length)):
            if end > start:
                regions.append((split, name, start, end))
    return regions


def region_windows(start: int, end: int, window: int, stride: int, min_bp: int) -> tuple[list[tuple[int, int]], int]:
    """Windows inside [start, end): full ones every `stride`, then one shorter tail if >= min_bp."""
    out = [(s, s + window) for s in range(start, end - window + 1, stride)]
    tail = out[-1][0] + stride if out else start
    dropped = 0
    if tail < end and (not out or out[-1][1] < end):
        if end - tail >= min_bp:
            out.append((tail, end))
        else:
            dropped = 1
    return out, dropped


def plan_species(spec: SpeciesSpec, info: FastaInfo, args) -> SpeciesPlan:
    longest = max(info.contigs, key=lambda c: c[1])
    if args.window_bp > longest[1]:
        raise DataPrepError(f"{info.source}: --window-bp {args.window_bp} is larger than every contig "
                            f"(longest: '{longest[0]}', {longest[1]} bp); use a smaller window")
    names = {name for name, _ in info.contigs}
    for key in ("valid_contigs", "test_contigs"):
        for contig in getattr(spec, key):
            if contig not in names:
                raise DataPrepError(f"genome list line {spec.line}: {key} names contig '{contig}', "
                                    f"which is not in {info.source} (or is empty)")
    plan = SpeciesPlan()
    by_split: dict[str, list[Window]] = {s: [] for s in SPLITS}
    for split, contig, start, end in split_regions(spec, info.contigs):
        windows, dropped = region_windows(start, end, args.window_bp, args.stride_bp, args.min_window_bp)
        by_split[split].extend(Window(contig, a, b) for a, b in windows)
        plan.dropped_short[split] += dropped
    target = args.shard_size_mb * 1e6
    for split, windows in by_split.items():
        if split == "train" and windows:
            order = np.random.default_rng([args.seed, zlib.crc32(spec.name.encode())]).permutation(len(windows))
            windows = [windows[i] for i in order]
        shards: list[list[Window]] = []
        size = target
        for w in windows:
            if size >= target:
                shards.append([])
                size = 0
            shards[-1].append(w)
            size += w.end - w.start + SAMPLE_OVERHEAD_BYTES
        plan.shards[split] = [ShardPlan(spec.name, split, i, ws, info.cache, Path(info.source).name, info.sha256,
                                        args.max_n_frac) for i, ws in enumerate(shards)]
    return plan


def sample_key(species: str, contig: str, start: int) -> str:
    # webdataset splits member names at the first '.', so contig names like NC_001133.9 are made safe
    return f"{species}-{re.sub(r'[^A-Za-z0-9_-]', '_', contig)}-{start:010d}"


def check_keys(spec: SpeciesSpec, info: FastaInfo) -> None:
    seen: dict[str, str] = {}
    for name, _ in info.contigs:
        safe = sample_key(spec.name, name, 0)
        if safe in seen:
            raise DataPrepError(f"{info.source}: contigs '{seen[safe]}' and '{name}' give the same sample key "
                                f"'{safe}' (only letters, digits, '_' and '-' are kept); rename one")
        seen[safe] = name


# one open pyfaidx handle per (process, cache file): a forked worker must never reuse its parent's
# handle, whose file offset it would share with the parent and its siblings (interleaved seeks and
# reads returned wrong bases when one process rebuilt shards in-process and then forked workers)
_READERS: dict[tuple[int, str], WindowReader] = {}


def write_shard(plan: ShardPlan, out_dir: str) -> dict:
    """Write one shard (temporary name, then rename); returns its counts."""
    key = (os.getpid(), plan.cache)
    reader = _READERS.get(key) or _READERS.setdefault(key, WindowReader(plan.cache))
    final = Path(out_dir) / plan.name
    tmp = temporary_path(final)
    samples, bp, dropped_n = 0, 0, 0
    # mtime 0 and fixed owner names make reruns byte-identical; values are bytes already (no encoder)
    with open(tmp, "wb") as handle, \
            wds.TarWriter(handle, mtime=0, user="janus", group="janus", encoder=False) as writer:
        for w in plan.windows:
            dna = normalise_bases(reader.fetch(w.contig, w.start, w.end))
            n_frac = (dna.count(b"N") + dna.count(b"n")) / len(dna)
            if n_frac > plan.max_n_frac:
                dropped_n += 1
                continue
            soft = np.count_nonzero(soft_mask(dna)) / len(dna)
            meta = {"species": plan.species, "contig": w.contig, "start": w.start, "end": w.end,
                    "n_frac": round(n_frac, 6), "softmasked_frac": round(soft, 6),
                    "source": plan.source, "source_sha256": plan.sha256}
            writer.write({"__key__": sample_key(plan.species, w.contig, w.start), "dna": dna,
                          "json": json.dumps(meta, sort_keys=True).encode()})
            samples += 1
            bp += w.end - w.start
    # hashed from the page cache right after writing: a small cost next to building the shard
    stats = {"path": plan.name, "samples": samples, "bp": bp, "dropped_n_frac": dropped_n,
             "sha256": file_digest(tmp), "bytes": tmp.stat().st_size}
    part = parts_path(out_dir, plan)
    part.parent.mkdir(parents=True, exist_ok=True)
    # counts land before the shard, so a shard in place always has its counts
    atomic_write_text(part, json.dumps(stats, sort_keys=True))
    os.replace(tmp, final)
    return stats


def parts_path(out_dir: str | Path, plan: ShardPlan) -> Path:
    return Path(out_dir) / ".state" / "parts" / (plan.name[:-len(".tar")] + ".json")


def completed(out_dir: str | Path, plan: ShardPlan, trusted: bool = False) -> dict | None:
    """Counts of a shard an earlier run with the same arguments wrote and that still matches its
    recorded size and sha256 (not re-hashed when `trusted`: just verified), else None: rebuild it."""
    part, shard = parts_path(out_dir, plan), Path(out_dir) / plan.name
    if not part.is_file():  # counts are written before the shard is renamed into place
        return None
    stats = json.loads(part.read_text())
    damage = None if trusted else shard_damage(shard, stats["sha256"], stats["bytes"])
    if damage:
        log.warning("%s: %s; rebuilding it", shard, damage)
        return None
    return stats


def brace_pattern(species: str, n: int) -> str:
    return f"{species}-{{000000..{n - 1:06d}}}.tar" if n > 1 else f"{species}-000000.tar"
