"""The job behind `janus shard` (janus_pretrain/commands/shard.py, data_prep/shard_genomes.py): check
arguments and inputs, plan, write shards, manifest last.

Layout of OUT: {train,valid,test}/{species}-{index:06d}.tar, manifest.json (written last, so its
presence means complete), .state/args.json (what a rerun must match) and .state/parts/ (counts,
size and sha256 of each finished shard, so a rerun can skip it). The plain FASTA cache copies in
.cache/ are deleted once the manifest is in place (only those: .cache/ itself goes only when that
leaves it empty, so a user's files there stay).

A rerun never trusts what it finds: temporary files of a killed run are deleted, every shard is
checked against its recorded size and sha256 (also when the manifest says complete), and what
is missing or damaged is rebuilt, byte-identical, before the manifest is written again.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from janus_pretrain.cli import bar_disable
from janus_pretrain.atomic_io import atomic_write_text, remove_orphaned_temporaries
from janus_pretrain.data.fasta_cache import remove_cache_files, scan_fasta
from janus_pretrain.digests import file_digest
from janus_pretrain.data.genomes import DataPrepError, read_genomes
from janus_pretrain.data.manifest import MANIFEST_FORMAT, SPLITS
from janus_pretrain.data.shard_integrity import shard_damage
from janus_pretrain.data.sharding import brace_pattern, check_keys, completed, plan_species, write_shard
from janus_pretrain.tokenizer import TOKENIZER_VERSION

log = logging.getLogger(__name__)


def check_args(args: argparse.Namespace) -> None:
    args.stride_bp = args.stride_bp or args.window_bp
    args.min_window_bp = args.min_window_bp if args.min_window_bp is not None else min(1024, args.window_bp)
    problems = []
    if args.window_bp <= 0:
        problems.append(f"--window-bp must be > 0 (got {args.window_bp})")
    if args.stride_bp <= 0:
        problems.append(f"--stride-bp must be > 0 (got {args.stride_bp})")
    if not 0 <= args.max_n_frac <= 1:
        problems.append(f"--max-n-frac must be in [0, 1] (got {args.max_n_frac})")
    if not 0 < args.min_window_bp <= max(args.window_bp, 1):
        problems.append(f"--min-window-bp must be in [1, window-bp] (got {args.min_window_bp})")
    if args.shard_size_mb <= 0:
        problems.append(f"--shard-size-mb must be > 0 (got {args.shard_size_mb})")
    if args.workers < 1:
        problems.append(f"--workers must be >= 1 (got {args.workers})")
    if problems:
        raise DataPrepError("; ".join(problems))


def fingerprint(args: argparse.Namespace, genomes_sha: str, inputs: dict[str, str]) -> dict:
    """Everything the output depends on (not --workers): a rerun must match it exactly."""
    return {"format": MANIFEST_FORMAT, "tokenizer_version": TOKENIZER_VERSION,
            "genomes": str(Path(args.genomes).resolve()), "genomes_sha256": genomes_sha, "inputs": inputs,
            "window_bp": args.window_bp, "stride_bp": args.stride_bp, "max_n_frac": args.max_n_frac,
            "min_window_bp": args.min_window_bp, "shard_size_mb": args.shard_size_mb, "seed": args.seed}


def check_output(out: Path, wanted: dict) -> str:
    """'new', 'resume' or 'complete'; refuses a non-empty OUT written with other arguments."""
    state = out / ".state" / "args.json"
    if not out.exists() or all(entry.name == ".cache" for entry in out.iterdir()):
        return "new"
    if not state.is_file():
        raise DataPrepError(f"--out {out} is not empty and was not written by janus shard; "
                            f"choose an empty or new directory")
    had = json.loads(state.read_text())
    if had != wanted:
        diff = [f"{k}: {had.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(had) | set(wanted))
                if had.get(k) != wanted.get(k)]
        raise DataPrepError(f"--out {out} holds shards made with different arguments or inputs "
                            f"({'; '.join(diff)}); use a new directory or delete this one")
    return "complete" if (out / "manifest.json").is_file() else "resume"


def claim_output(out: Path, wanted: dict) -> None:
    state = out / ".state" / "args.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state, json.dumps(wanted, indent=1, sort_keys=True))
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)


def _scan(job):
    spec, cache_dir, sha = job
    return scan_fasta(spec.fasta, cache_dir, spec.name, sha)


def _write(job):
    plan, out, trusted = job
    return completed(out, plan, trusted) or write_shard(plan, out)


def _damage(job):
    path, entry = job
    return entry["path"], shard_damage(path, entry["sha256"], entry["bytes"])


def verify_complete(out: Path, manifest: dict, pool) -> tuple[dict[str, str], set[str]]:
    """Shards of a complete directory checked against the manifest: ({damaged: why}, {sound})."""
    entries = [shard for entry in manifest["species"].values() for split in entry["splits"].values()
               for shard in split["shards"]]
    found = dict((pool.imap if pool else map)(_damage, [(out / e["path"], e) for e in entries]))
    return {name: why for name, why in found.items() if why}, {name for name, why in found.items() if not why}


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Shard as `args` (the flags of `janus shard`) say; `argv`: the command to record in the manifest."""
    check_args(args)
    specs = read_genomes(args.genomes)
    out = Path(args.out)
    genomes_sha = file_digest(args.genomes)
    inputs = {spec.name: file_digest(spec.fasta) for spec in specs}
    wanted = fingerprint(args, genomes_sha, inputs)
    status = check_output(out, wanted)
    if status != "new" or out.exists():
        for orphan in remove_orphaned_temporaries(out):
            log.info("removed %s, left by a killed run", orphan)
    created = not out.exists()
    pool = multiprocessing.get_context("fork").Pool(args.workers) if args.workers > 1 else None
    try:
        trusted: set[str] = set()
        if status == "complete":
            manifest = json.loads((out / "manifest.json").read_text())
            damaged, trusted = verify_complete(out, manifest, pool)
            if not damaged:
                log.info("%s: already complete with these arguments; %d shards match their sha256", out, len(trusted))
                return manifest
            for name, why in sorted(damaged.items()):
                log.warning("%s: %s; rebuilding it", out / name, why)
            (out / "manifest.json").unlink()  # incomplete until the damaged shards are rebuilt
        try:
            infos = list((pool.imap if pool else map)(_scan, [(s, out / ".cache", inputs[s.name]) for s in specs]))
            plans = {}
            for spec, info in zip(specs, infos):
                check_keys(spec, info)
                plans[spec.name] = plan_species(spec, info, args)
        except BaseException:
            if status == "new":  # leave no trace of a run whose inputs failed their checks
                remove_cache_files(out / ".cache", [(s.name, inputs[s.name]) for s in specs])
                if created:
                    shutil.rmtree(out, ignore_errors=True)
            raise
        claim_output(out, wanted)
        jobs = [(p, str(out), p.name in trusted) for sp in plans.values() for split in SPLITS for p in sp.shards[split]]
        results = {}
        done = _tagged(pool, jobs) if pool else ((job, _write(job)) for job in jobs)
        with tqdm(total=sum(p.bp for p, *_ in jobs), unit="bp", unit_scale=True, desc="sharding",
                  disable=bar_disable(getattr(args, "progress", None))) as bar:
            for (plan, _, _), stats in done:
                results[plan.name] = stats
                bar.update(plan.bp)
    finally:
        if pool:  # every result is in (or we are failing): stop the workers now
            pool.terminate()
            pool.join()
    manifest = build_manifest(args, argv, wanted, specs, infos, plans, results)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    remove_cache_files(out / ".cache", [(s.name, inputs[s.name]) for s in specs])
    return manifest


def _tagged(pool, jobs):
    """(job, stats) pairs in completion order from the pool."""
    for index, stats in pool.imap_unordered(_indexed_write, list(enumerate(jobs))):
        yield jobs[index], stats


def _indexed_write(item):
    index, job = item
    return index, _write(job)


def build_manifest(args, argv, wanted, specs, infos, plans, results) -> dict:
    species = {}
    totals = {split: {"samples": 0, "bp": 0} for split in SPLITS}
    for spec, info in zip(specs, infos):
        entry = {"weight": spec.weight, "fasta": Path(info.source).name, "sha256": info.sha256,
                 "compression": info.compression, "contigs": len(info.contigs),
                 "bp": sum(n for _, n in info.contigs), "warnings": info.warnings, "splits": {}}
        for split in SPLITS:
            shards = [results[p.name] for p in plans[spec.name].shards[split]]
            listed = [{key: s[key] for key in ("path", "samples", "bp", "sha256", "bytes")} for s in shards]
            entry["splits"][split] = {
                "shards": listed, "pattern": f"{split}/{brace_pattern(spec.name, len(listed))}" if listed else "",
                "samples": sum(s["samples"] for s in shards), "bp": sum(s["bp"] for s in shards),
                "dropped": {"n_frac_above_max": sum(s["dropped_n_frac"] for s in shards),
                            "tail_below_min_window_bp": plans[spec.name].dropped_short[split]}}
            totals[split]["samples"] += entry["splits"][split]["samples"]
            totals[split]["bp"] += entry["splits"][split]["bp"]
        species[spec.name] = entry
    return {"format": MANIFEST_FORMAT, "tokenizer_version": TOKENIZER_VERSION,
            "command": " ".join(argv if argv is not None else sys.argv),
            "arguments": {k: v for k, v in wanted.items() if k not in ("inputs", "format", "tokenizer_version")},
            "input_sha256": wanted["inputs"], "window_bp": args.window_bp, "stride_bp": args.stride_bp,
            "min_window_bp": args.min_window_bp, "max_n_frac": args.max_n_frac,
            "species_order": [s.name for s in specs], "species": species, "splits": totals}
