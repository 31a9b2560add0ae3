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

import dataclasses
import json
import tempfile
from collections import Counter
from pathlib import Path

from janus_pretrain import cli
from janus_pretrain.evaluation.task_builder import (SPLITS, TASKS, Row, TaskOptions, build_task, overlaps,
                                                   write_rows)

ALL_TASKS = (*TASKS, "codon_snv")  # TASKS by default; codon_snv (zero-shot variants) when asked


def read_genome(fasta: Path) -> tuple[dict[str, str], str]:
    """{contig: bases} of a small genome (plain, gzip or bgzip), through the checked sharding scan."""
    from janus_pretrain.data.fasta_cache import WindowReader, scan_fasta

    with tempfile.TemporaryDirectory() as tmp:
        info = scan_fasta(fasta, tmp, "tasks")
        reader = WindowReader(info.cache)
        try:
            return {name: reader.fetch(name, 0, length).decode() for name, length in info.contigs}, info.sha256
        finally:
            reader.close()


def pretraining_regions(genomes_yaml: Path, species: str, contigs: dict[str, str]):
    from janus_pretrain.data.genomes import read_genomes
    from janus_pretrain.data.sharding import split_regions

    specs = {s.name: s for s in read_genomes(genomes_yaml)}
    if species not in specs:
        raise ValueError(f"{genomes_yaml}: no species {species!r} (species: {sorted(specs)})")
    return split_regions(specs[species], [(name, len(seq)) for name, seq in contigs.items()])


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
    defaults = TaskOptions()
    for f in dataclasses.fields(TaskOptions):
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        old = (flag,) if f.name.endswith("window") else ()  # lengths in bases are --*-bp in every command
        flag += "-bp" if old else ""
        if isinstance(value, list):
            cli.flag(parser, flag, *old, dest=f.name, default="", help="comma-separated")
        else:
            cli.flag(parser, flag, *old, dest=f.name, type=type(value), default=value, help=f"default {value}")
    args = parser.parse_args(argv)
    from janus_pretrain.data.genomes import DataPrepError
    from janus_pretrain.digests import file_digest
    from janus_pretrain.evaluation.annotation import AnnotationError, read_gtf

    options = TaskOptions(**{f.name: ([x for x in getattr(args, f.name).split(",") if x]
                                      if isinstance(getattr(defaults, f.name), list) else getattr(args, f.name))
                             for f in dataclasses.fields(TaskOptions)})
    tasks = [t for t in args.tasks.split(",") if t]
    prefix = args.prefix or args.fasta.name.split(".")[0]
    try:
        if any(t not in ALL_TASKS for t in tasks):
            raise ValueError(f"--tasks takes {','.join(ALL_TASKS)}, got {args.tasks!r}")
        if (args.genomes is None) != (args.species is None):
            raise ValueError("--genomes and --species go together (the overlap report needs both)")
        genomes, fasta_sha = read_genome(args.fasta)
        annotation = read_gtf(args.gtf)
        unknown = sorted(annotation.contigs() - set(genomes))
        if unknown:
            raise ValueError(f"{args.gtf}: contigs {unknown[:5]} are not in {args.fasta} (contigs {sorted(genomes)[:5]})")
        regions = pretraining_regions(args.genomes, args.species, genomes) if args.genomes else None
    except (ValueError, DataPrepError, AnnotationError) as exc:
        return cli.fail(exc)
    command = cli.command_line(prog, argv)
    manifest = {"command": command, "options": dataclasses.asdict(options), "prefix": prefix,
                "inputs": {"fasta": {"path": str(args.fasta), "sha256": fasta_sha},
                           "gtf": {"path": str(args.gtf), "sha256": file_digest(args.gtf)}},
                "task": None, "splits": {}}
    from janus_pretrain.atomic_io import atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        build = _codon_snv if task == "codon_snv" else _window_task
        entry = build(task, args.out, prefix, genomes, annotation, options, regions)
        # one manifest per task: tasks of one genome may be built with different options
        atomic_write_text(args.out / f"{prefix}_{task}.json",
                          json.dumps({**manifest, "task": task, "splits": entry}, indent=2, sort_keys=True) + "\n")
    return 0



def _split_entry(task: str, split: str, path: Path, classes: dict, located: list[Row], regions, unit: str) -> dict:
    """The manifest entry of one written split file (with the pretraining overlap report), printed."""
    entry = {"file": path.name, "rows": len(located), "classes": classes}
    if regions is not None:
        entry["overlaps_pretraining"] = dict(sorted(overlaps(located, regions).items()))
    print(f"{task} {split}: {len(located)} {unit} {classes}"
          + (f", overlapping pretraining regions {entry['overlaps_pretraining']}" if regions else ""))
    return entry


def _window_task(task: str, out: Path, prefix: str, genomes, annotation, options, regions) -> dict:
    """Write PREFIX_<task>_{train,valid,test}.tsv; their manifest entries by split."""
    parts = build_task(task, genomes, annotation, options)
    entry = {}
    for split in SPLITS:
        rows = parts[split]
        path = out / f"{prefix}_{task}_{split}.tsv"
        write_rows(path, rows)
        classes = dict(sorted(Counter(r.label for r in rows).items()))
        entry[split] = _split_entry(task, split, path, classes, rows, regions, "rows")
    return entry


def _codon_snv(task: str, out: Path, prefix: str, genomes, annotation, options, regions) -> dict:
    """Write PREFIX_codon_snv_test.tsv (zero-shot variants, test block only); its manifest entry."""
    from janus_pretrain.evaluation.codon_variants import build_codon_snv, counts, write_variants

    variants = build_codon_snv(genomes, annotation, options)
    path = out / f"{prefix}_{task}_test.tsv"
    write_variants(path, variants)
    return {"test": _split_entry(task, "test", path, counts(variants), [v.as_row() for v in variants], regions,
                                 "variants")}
