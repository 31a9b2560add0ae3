"""Embed the records of a FASTA file with an exported Janus backbone.

    janus embed --model EXPORT_DIR --fasta IN.fa --out OUT.npz [--per-position] [--window-bp 1024]

OUT.npz: names (N,), lengths (N,), mean (N, D) per-record mean of the per-position states, and
with --per-position states_<i> (L_i, D) for record i. Records longer than --window-bp are embedded
window by window (consecutive, non-overlapping). The FASTA may be plain, gzip or bgzip: a
compressed one is checked and decompressed once into a cached plain copy
(janus_pretrain/downstream/indexed_fasta.py says where). (--window is the older spelling of --window-bp.)
Exit codes: 0 done, 2 bad input (one-line message).
"""
from __future__ import annotations

from janus_pretrain import cli


@cli.one_line_os_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = cli.parser(__doc__, prog)
    parser.add_argument("--model", required=True, help="export directory (janus convert)")
    parser.add_argument("--fasta", required=True, help="FASTA, plain, gzip or bgzip")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--per-position", action="store_true", help="also store every position's state")
    cli.flag(parser, "--window-bp", "--window", type=int, default=1024, help="bases per forward pass (default 1024)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default="cpu")
    cli.add_progress(parser)
    args = parser.parse_args(argv)
    if problem := cli.output_problem(args.out):
        return cli.fail(problem)
    from tqdm import tqdm

    from janus_pretrain.downstream.embedding import embed_fasta, save_npz
    from janus_pretrain.downstream.indexed_fasta import FastaError
    from janus_pretrain.export import ExportError, load_backbone

    if args.window_bp < 1:
        return cli.fail("--window-bp must be >= 1")
    try:
        backbone = load_backbone(args.model, args.device)
        with tqdm(desc="embed", unit="bp", unit_scale=True, disable=cli.bar_disable(args.progress)) as bar:
            embeddings = embed_fasta(backbone, args.fasta, args.window_bp, args.per_position, args.batch_size,
                                     args.device, progress=lambda name, n: bar.update(n))
        save_npz(embeddings, args.out)
    except (FastaError, ExportError) as exc:
        return cli.fail(exc)
    print(f"wrote {args.out}: {len(embeddings.names)} records, D={embeddings.mean.shape[1]}")
    return 0
