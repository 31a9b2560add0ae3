#!/usr/bin/env python
"""Embed the records of a FASTA file with an exported Janus backbone.

    python launch/embed.py --model EXPORT_DIR --fasta IN.fa --out OUT.npz [--per-position] [--window 1024]

OUT.npz: names (N,), lengths (N,), mean (N, D) per-record mean of the per-position states, and
with --per-position states_<i> (L_i, D) for record i. Records longer than --window are embedded
window by window (consecutive, non-overlapping). The FASTA must be plain or bgzip-compressed
(pyfaidx indexes it; a .fai file is written next to it).
Exit codes: 0 done, 2 bad input (one-line message).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

from janus_pretrain import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--model", required=True, help="export directory")
    parser.add_argument("--fasta", required=True)
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--per-position", action="store_true", help="also store every position's state")
    parser.add_argument("--window", type=int, default=1024, help="bases per forward pass (default 1024)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from janus_pretrain.downstream.embedding import embed_fasta, save_npz
    from janus_pretrain.downstream.indexed_fasta import FastaError
    from janus_pretrain.export import ExportError, load_backbone

    if args.window < 1:
        return cli.fail("--window must be >= 1")
    try:
        backbone = load_backbone(args.model, args.device)
        embeddings = embed_fasta(backbone, args.fasta, args.window, args.per_position, args.batch_size, args.device,
                                 progress=lambda name, n: print(f"embedded {name} ({n:,} bp)", file=sys.stderr))
        save_npz(embeddings, args.out)
    except (FastaError, ExportError) as exc:
        return cli.fail(exc)
    print(f"wrote {args.out}: {len(embeddings.names)} records, D={embeddings.mean.shape[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
