"""Shard genome FASTA files of many species into WebDataset tar shards.

Shard once, at the longest window any run will use (runs crop shorter contexts at load time):

    janus shard --genomes configs/genomes/bundled.yaml --out shards/bundled --window-bp 16384 \
        [--stride-bp S] [--max-n-frac 0.5] [--min-window-bp 1024] [--shard-size-mb 256] [--workers 4] [--seed 0]

FASTA files may be plain, gzip or bgzip. OUT gets {train,valid,test}/{species}-{index:06d}.tar and
manifest.json (written last). A rerun with the same arguments checks every shard against its
sha256 and rebuilds only what is missing or damaged; other arguments into the same OUT are
refused. docs/data.md has the genomes YAML and the sample format.
Exit codes: 0 done, 2 bad input (one-line message naming the file and line or key).
"""
from __future__ import annotations

import argparse
import logging
import sys

from janus_pretrain import cli

log = logging.getLogger(__name__)


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = cli.parser(__doc__, prog)
    p.add_argument("--genomes", required=True, help="GENOMES.yaml listing species, FASTA paths, weights, held-out contigs")
    p.add_argument("--out", required=True, help="output directory (new or empty, or an earlier run with the same arguments)")
    p.add_argument("--window-bp", type=int, required=True, help="window length of each sample")
    p.add_argument("--stride-bp", type=int, default=0, help="distance between window starts (default: window, no overlap)")
    p.add_argument("--max-n-frac", type=float, default=0.5, help="drop windows with a larger fraction of N")
    p.add_argument("--min-window-bp", type=int, default=None,
                   help="keep a contig's shorter last window if at least this long (default: min(1024, window))")
    p.add_argument("--shard-size-mb", type=float, default=256.0, help="target shard size")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (over genomes, then over shards)")
    p.add_argument("--seed", type=int, default=0, help="seeds the assignment of train windows to shards")
    cli.add_progress(p)
    return p


@cli.one_line_os_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from janus_pretrain.data.genomes import DataPrepError
    from janus_pretrain.data.prepare import run

    cli.log_to_stderr()
    args = parser(prog).parse_args(argv)
    if problem := cli.output_problem(args.out):
        return cli.fail(problem)
    try:
        manifest = run(args, [cli.command_line(prog, argv)])
    except DataPrepError as exc:
        return cli.fail(exc)
    for split, total in manifest["splits"].items():
        log.info("%s: %d samples, %.3f Mbp", split, total["samples"], total["bp"] / 1e6)
    return 0
