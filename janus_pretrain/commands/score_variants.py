"""Zero-shot SNV effect scores: log P(alt) - log P(ref) at each variant.

One forward pass over the reference window centred on each variant (the Janus read-out at a
position never sees that position):

    janus score-variants --model EXPORT_DIR --fasta REF.fa --variants in.vcf --out scores.tsv \
        [--window-bp 1024] [--batch-size 8] [--on-ref-mismatch report|error]

VARIANTS: VCF (plain or gzip; POS 1-based; multi-allelic ALTs split) or a TSV chrom, pos, ref,
alt (1-based pos, optional header). REF.fa: plain, gzip or bgzip (a compressed one is checked and
decompressed once into a cached plain copy). Output TSV columns: chrom pos ref alt score logp_ref
logp_alt status; status is ok, ref_mismatch:fasta=X (REF disagrees with the FASTA: not scored) or
not_snv. --on-ref-mismatch error stops at the first mismatch instead. Unknown contigs and
positions outside a contig are errors. (--window is the older spelling of --window-bp.)
Exit codes: 0 done, 2 bad input (one-line message).
"""
from __future__ import annotations

import sys

from janus_pretrain import cli


@cli.one_line_os_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = cli.parser(__doc__, prog)
    parser.add_argument("--model", required=True, help="export directory (janus convert)")
    parser.add_argument("--fasta", required=True, help="reference FASTA (plain, gzip or bgzip)")
    parser.add_argument("--variants", required=True, help="VCF or TSV chrom, pos, ref, alt")
    parser.add_argument("--out", required=True, help="output TSV")
    cli.flag(parser, "--window-bp", "--window", type=int, default=1024,
             help="bases of context per variant (default 1024)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--on-ref-mismatch", choices=("report", "error"), default="report")
    args = parser.parse_args(argv)
    if problem := cli.output_problem(args.out):
        return cli.fail(problem)
    from janus_pretrain.downstream.indexed_fasta import FastaError
    from janus_pretrain.downstream.variants import VariantError, read_variants, score_variants, write_scores
    from janus_pretrain.export import ExportError, load_pretrained

    if args.window_bp < 3:
        return cli.fail("--window-bp must be >= 3")
    try:
        variants = read_variants(args.variants)
        model = load_pretrained(args.model, args.device)
        rows = score_variants(model, args.fasta, variants, args.window_bp, args.batch_size, args.device,
                              args.on_ref_mismatch)
        write_scores(rows, args.out)
    except (VariantError, FastaError, ExportError) as exc:
        return cli.fail(exc)
    counts: dict[str, int] = {}
    for row in rows:
        status = row["status"].split(":")[0]
        counts[status] = counts.get(status, 0) + 1
    print(f"wrote {args.out}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if counts.get("ref_mismatch"):
        print(f"warning: {counts['ref_mismatch']} variants have a REF that disagrees with {args.fasta}; "
              f"they are marked ref_mismatch and not scored", file=sys.stderr)
    return 0
