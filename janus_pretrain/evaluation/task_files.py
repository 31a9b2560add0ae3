"""`janus make-tasks`' job: labelled task files and their manifests from a genome and its annotation.

For each task asked for: the window tasks (task_builder.py) write PREFIX_<task>_{train,valid,test}.tsv,
the zero-shot coding-variant task (codon_variants.py) PREFIX_codon_snv_test.tsv, and every task
PREFIX_<task>.json: counts per split and class, the options, input checksums, the command and,
given the pretraining genome list and species, how many rows of each split overlap the
pretraining train/valid/test regions of that species. Deterministic: the same inputs and
options give byte-identical files.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from collections import Counter
from pathlib import Path

from janus_pretrain.atomic_io import atomic_write_text
from janus_pretrain.digests import file_digest
from janus_pretrain.evaluation.task_builder import SPLITS, TASKS, Row, TaskOptions, build_task, overlaps, write_rows

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


def make_tasks(fasta: Path, gtf: Path, out: Path, prefix: str, tasks: list[str], options: TaskOptions,
               genomes: Path | None, species: str | None, command: str) -> None:
    """Write every task's files and manifest into `out`; ValueError, DataPrepError or AnnotationError
    (one line naming the file) for bad input, before anything is written."""
    from janus_pretrain.evaluation.annotation import read_gtf

    if any(t not in ALL_TASKS for t in tasks):
        raise ValueError(f"--tasks takes {','.join(ALL_TASKS)}, got {','.join(tasks)!r}")
    if (genomes is None) != (species is None):
        raise ValueError("--genomes and --species go together (the overlap report needs both)")
    contigs, fasta_sha = read_genome(fasta)
    annotation = read_gtf(gtf)
    unknown = sorted(annotation.contigs() - set(contigs))
    if unknown:
        raise ValueError(f"{gtf}: contigs {unknown[:5]} are not in {fasta} (contigs {sorted(contigs)[:5]})")
    regions = pretraining_regions(genomes, species, contigs) if genomes else None
    manifest = {"command": command, "options": dataclasses.asdict(options), "prefix": prefix,
                "inputs": {"fasta": {"path": str(fasta), "sha256": fasta_sha},
                           "gtf": {"path": str(gtf), "sha256": file_digest(gtf)}},
                "task": None, "splits": {}}
    out.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        build = _codon_snv if task == "codon_snv" else _window_task
        entry = build(task, out, prefix, contigs, annotation, options, regions)
        # one manifest per task: tasks of one genome may be built with different options
        atomic_write_text(out / f"{prefix}_{task}.json",
                          json.dumps({**manifest, "task": task, "splits": entry}, indent=2, sort_keys=True) + "\n")


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
