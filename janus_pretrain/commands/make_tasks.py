"""Labelled evaluation tasks from a genome FASTA and its GTF annotation.

    janus make-tasks --fasta data/genomes/dmel_chr4.fna.gz --gtf data/genomes/dmel_chr4.gtf.gz \
        --out data/tasks --prefix dmel [--tasks splice,region,promoter,codon_snv] \
        [--genomes configs/genomes/bundled.yaml --species dmel]

Writes OUT/PREFIX_<task>_{train,valid,test}.tsv (columns sequence, label, contig, start, strand)
for the window tasks (default: splice,region,promoter), OUT/PREFIX_codon_snv_test.tsv for the
zero-shot coding-variant task (columns chrom, pos, ref, alt, label, kind, strand; test block only:
janus_pretrain/evaluation/codon_variants.py), and OUT/PREFIX_<task>.json: counts per split and class, the options, input checksums, the command,
and, with --genomes/--species, how many windows of each split overlap the pretraining
train/valid/test regions of that species (a test window inside pretraining *train* data means
the model saw those bases while pretraining). Deterministic: the same inputs and options give
byte-identical files. See janus_pretrain/evaluation/task_builder.py for the window tasks.
Exit codes: 0 done, 2 bad input (one-line message naming the file and line).
"""
from __future__ import annotations

from pathlib import Path

from janus_pretrain import cli
from janus_pretrain.evaluation.task_builder import TASKS, TaskOptions
from janus_pretrain.evaluation.task_files import ALL_TASKS


def _bp_flags(name: str) -> tuple[str, tuple[str, ...]]:
    """Lengths in bases are --*-bp in every command; --window and --splice-window stay as older spellings."""
    flag = "--" + name.replace("_", "-")
    return (flag + "-bp", (flag,)) if name.endswith("window") else (flag, ())


@cli.one_line_os_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = cli.parser(__doc__, prog)
    parser.add_argument("--fasta", required=True, type=Path)
    parser.add_argument("--gtf", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--prefix", default=None, help="file name prefix (default: the FASTA name's first word)")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated subset of {','.join(ALL_TASKS)} (default {','.join(TASKS)})")
    parser.add_argument("--genomes", type=Path, default=None, help="pretraining genome list, for the overlap report")
    parser.add_argument("--species", default=None, help="this genome's name in --genomes")
    cli.add_dataclass_flags(parser, TaskOptions, renamed=_bp_flags)
    args = parser.parse_args(argv)
    if problem := cli.output_problem(args.out):
        return cli.fail(problem)
    from janus_pretrain.data.genomes import DataPrepError
    from janus_pretrain.evaluation.annotation import AnnotationError
    from janus_pretrain.evaluation.task_files import make_tasks

    try:
        make_tasks(args.fasta, args.gtf, args.out, args.prefix or args.fasta.name.split(".")[0],
                   [t for t in args.tasks.split(",") if t], cli.dataclass_from_flags(TaskOptions, args),
                   args.genomes, args.species, cli.command_line(prog, argv))
    except (ValueError, DataPrepError, AnnotationError) as exc:
        return cli.fail(exc)
    return 0
