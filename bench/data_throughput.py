#!/usr/bin/env python
"""Data throughput: sharding vs `zcat FILE > /dev/null` on the same file, and loader bp/s per worker.

python bench/data_throughput.py [--fasta data/genomes/dmel_chr4.fna.gz] [--windows 1048576,16384]
       [--seq-len 1024,16384] [--workers 1,2] [--seconds 5]

Ratios are against baselines measured in the same run on the same machine, never fixed numbers.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from janus_pretrain.config import DataConfig  # noqa: E402
from janus_pretrain.data import TrainStream  # noqa: E402
from janus_pretrain.data.fasta_cache import scan_fasta  # noqa: E402
from janus_pretrain.commands.shard import parser as shard_parser  # noqa: E402
from janus_pretrain.data.prepare import run as shard_run  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def zcat_once(fasta: Path) -> float:
    return timed(lambda: subprocess.run(["zcat", str(fasta)], stdout=subprocess.DEVNULL, check=True))


def shard_once(genomes: Path, window: int, workers: int, work: Path, expect_bp: int | None = None) -> float:
    """One full sharding run into a fresh directory (cleanup untimed; checks it really sharded)."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    if out.exists():
        raise RuntimeError(f"could not clear {out}")
    args = shard_parser().parse_args(["--genomes", str(genomes), "--out", str(out), "--window-bp", str(window),
                                      "--workers", str(workers), "--shard-size-mb", "64"])
    holder = {}
    seconds = timed(lambda: holder.update(manifest=shard_run(args, ["bench"])))
    got = sum(split["bp"] for split in holder["manifest"]["splits"].values())
    if expect_bp is not None and got > expect_bp:
        raise RuntimeError(f"sharded {got} bp of a {expect_bp} bp input")
    return seconds


def paired(repeats: int, baseline, candidate) -> tuple[float, float, float]:
    """Best baseline and candidate times and the median of per-pair ratios (robust to load changes)."""
    pairs = [(baseline(), candidate()) for _ in range(repeats)]
    return min(b for b, _ in pairs), min(c for _, c in pairs), statistics.median(b / c for b, c in pairs)


def loader_bp_per_s(manifest: Path, seq_len: int, workers: int, seconds: float) -> tuple[float, int]:
    micro_batch = max(1, 65536 // seq_len)
    config = DataConfig(manifest=str(manifest), seq_len=seq_len, num_workers=workers, shuffle_buffer=64)
    stream = TrainStream(config, micro_batch=micro_batch, seed=0)
    for _ in range(2 * max(1, workers)):  # start-up and first fills are not throughput
        next(stream)
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(stream)
        batches += 1
    elapsed = time.perf_counter() - start
    stream.close()
    return batches * micro_batch * seq_len / elapsed, micro_batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fasta", default=str(REPO / "data/genomes/dmel_chr4.fna.gz"))
    p.add_argument("--windows", default="1048576,16384")
    p.add_argument("--seq-len", default="1024,16384")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    fasta = Path(a.fasta).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        genomes = work / "one.yaml"
        genomes.write_text(yaml.safe_dump({"species": [{"name": "bench", "fasta": str(fasta),
                                                        "valid_fraction": 0.05, "test_fraction": 0.05}]}))
        bp = sum(n for _, n in scan_fasta(fasta, work / "probe", "probe").contigs)
        print(f"input: {fasta.name}, {bp / 1e6:.3f} Mbp; {a.repeats} interleaved pairs of zcat and sharding runs")
        for window in (int(w) for w in a.windows.split(",")):
            zcat, seconds, ratio = paired(a.repeats, lambda: zcat_once(fasta),
                                          lambda: shard_once(genomes, window, 1, work, bp))
            print(f"window {window:>8d} bp: zcat FILE > /dev/null {zcat * 1e3:.1f} ms = {bp / zcat / 1e6:.1f} Mbp/s; "
                  f"sharding, 1 worker, {seconds * 1e3:.1f} ms = {bp / seconds / 1e6:.1f} Mbp/s per worker; "
                  f"median ratio to zcat {ratio:.2f} (target >= 0.5)")
        bundled = REPO / "configs/genomes/bundled.yaml"
        total_bp = 0
        for spec in yaml.safe_load(bundled.read_text())["species"]:
            total_bp += sum(n for _, n in scan_fasta(bundled.parent / spec["fasta"], work / "probe", spec["name"]).contigs)
        for workers in sorted({1, max(int(w) for w in a.workers.split(","))}):
            seconds = min(shard_once(bundled, 16384, workers, work) for _ in range(a.repeats))
            print(f"sharding all bundled genomes ({total_bp / 1e6:.2f} Mbp), window 16384, {workers} worker(s): "
                  f"{total_bp / seconds / 1e6:.1f} Mbp/s total, {total_bp / seconds / 1e6 / workers:.1f} per worker")
        manifest = work / "loader"
        shard_run(shard_parser().parse_args(["--genomes", str(bundled), "--out", str(manifest),
                                             "--window-bp", "16384", "--shard-size-mb", "1"]), ["bench"])
        for seq_len in (int(s) for s in a.seq_len.split(",")):
            for workers in (int(w) for w in a.workers.split(",")):
                rate, micro_batch = loader_bp_per_s(manifest, seq_len, workers, a.seconds)
                print(f"loader, seq_len {seq_len:>6d}, micro_batch {micro_batch:>3d}, {workers} worker(s): "
                      f"{rate / 1e6:.2f} Mbp/s = {rate / 1e6 / workers:.2f} Mbp/s per worker")


if __name__ == "__main__":
    main()
