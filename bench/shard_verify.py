#!/usr/bin/env python
"""Cost of shard verification (data.verify_shards) and of the per-sample checks, on this machine.

python bench/shard_verify.py [--shard-mb 256] [--repeats 5]

Measures sha256 over a shard-sized file (from the page cache: a lower bound of the time when the
disk is slower), the per-sample check on a 1 Mbp window (the 1m.yaml case), and one pass of the
loader over the bundled demo shards with verification on and off (interleaved, best of repeats).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from janus_pretrain.data.manifest import read_manifest  # noqa: E402
from janus_pretrain.commands.shard import parser as shard_parser  # noqa: E402
from janus_pretrain.data.prepare import run as shard_run  # noqa: E402
from janus_pretrain.data.shard_integrity import ShardReader, sample_problem  # noqa: E402
from janus_pretrain.digests import file_digest  # noqa: E402


def best(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def one_pass(shards: list[dict], verify: bool) -> None:
    for _ in ShardReader(verify=verify).windows(shards):
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shard-mb", type=int, default=256, help="size of the synthetic shard to hash (default shard size)")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        big = work / "big.tar"
        big.write_bytes(os.urandom(a.shard_mb << 20))
        seconds = best(a.repeats, lambda: file_digest(big))
        print(f"sha256 of a {a.shard_mb} MiB shard: {seconds:.3f} s = {a.shard_mb * 1.048576 / seconds:.0f} MB/s")
        window = (b"ACGTacgtNN" * (1 << 17))[:1 << 20]
        sample = {"dna": window, "json": json.dumps({"start": 0, "end": len(window)}).encode()}
        check = best(a.repeats, lambda: [sample_problem(sample) for _ in range(20)]) / 20
        print(f"per-sample check of a 1 Mbp window: {check * 1e3:.2f} ms = {len(window) / check / 1e6:.0f} MB/s")
        out = work / "demo"
        shard_run(shard_parser().parse_args(["--genomes", str(REPO / "configs/genomes/bundled.yaml"), "--out",
                                             str(out), "--window-bp", "16384", "--shard-size-mb", "1"]), ["bench"])
        manifest = read_manifest(out)
        shards = [s for name in manifest["species_order"] for split in ("train", "valid", "test")
                  for s in manifest["species"][name]["splits"][split]["shards"]]
        size = sum(s["bytes"] for s in shards)
        on = off = float("inf")
        for _ in range(a.repeats):  # interleaved: both see the same machine load
            off = min(off, best(1, lambda: one_pass(shards, False)))
            on = min(on, best(1, lambda: one_pass(shards, True)))
        print(f"demo shards ({len(shards)} files, {size / 1e6:.1f} MB): one read {off * 1e3:.1f} ms without, "
              f"{on * 1e3:.1f} ms with verification (+{(on - off) * 1e3:.1f} ms, {on / off - 1:+.0%})")


if __name__ == "__main__":
    main()
