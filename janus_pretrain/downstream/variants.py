"""Zero-shot SNV scoring with the Janus read-out (launch/score_variants.py).

logits[p] is the distribution of base p given both sides and never sees base p itself, so one
forward pass over the REFERENCE window centred on the variant gives
    score = log P(alt | context) - log P(ref | context)
(negative: the model prefers the reference base). Positions are 1-based, as in VCF: POS=1 is the
first base of the contig. A REF allele that disagrees with the FASTA is reported in the output
(status ref_mismatch) and not scored, or is an error with on_ref_mismatch="error". Variants that
are not single-base A/C/G/T substitutions are written with status not_snv.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from janus_pretrain.atomic_io import temporary_path, text_lines
from janus_pretrain.downstream.indexed_fasta import FastaError, contig_length, fetch, open_fasta
from janus_pretrain.tokenizer import BASE_IDS, TokenizerError, encode

BASE_INDEX = dict(zip("ACGT", BASE_IDS))
COLUMNS = ["chrom", "pos", "ref", "alt", "score", "logp_ref", "logp_alt", "status"]


class VariantError(ValueError):
    """A variant file or a variant that cannot be scored; names the file and line."""


@dataclass
class Variant:
    chrom: str
    pos: int  # 1-based, as in VCF
    ref: str
    alt: str
    where: str  # "file line N" for messages
    extra: dict[str, str] = field(default_factory=dict)  # VCF INFO key=value pairs; TSV columns after alt (by header name)


def _info(text: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in text.split(";") if item and item != ".")
    return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}


def read_variants(path: str | Path) -> list[Variant]:
    """VCF (plain or gzip; multi-allelic ALTs split) or TSV with columns chrom, pos, ref, alt
    (an optional header line starting with 'chrom'; with a header, further named columns such as
    a label are kept in Variant.extra). Positions are 1-based in both."""
    path = Path(path)
    if not path.is_file():
        raise VariantError(f"variant file not found: {path}")
    variants: list[Variant] = []
    is_vcf = None
    header: list[str] = []
    for line_no, line in text_lines(path, VariantError):
        line = line.rstrip("\n\r")
        if is_vcf is None and line.strip():
            is_vcf = line.startswith("##fileformat=VCF") or line.startswith("#CHROM") or \
                path.name.endswith((".vcf", ".vcf.gz"))
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not is_vcf and len(variants) == 0 and not header and fields[0].strip().lower() in ("chrom", "chr", "chromosome"):
            header = [f.strip() for f in fields]  # TSV header
            continue
        where = f"{path} line {line_no}"
        if is_vcf:
            if len(fields) < 5:
                raise VariantError(f"{where}: a VCF data line needs at least 5 tab-separated fields "
                                   f"(CHROM POS ID REF ALT), got {len(fields)}")
            chrom, pos_text, ref, alts = fields[0], fields[1], fields[3], fields[4].split(",")
            extra = _info(fields[7]) if len(fields) > 7 else {}
        else:
            expected = len(header) if header else 4
            if len(fields) != expected or expected < 4:
                raise VariantError(f"{where}: expected {expected} tab-separated fields "
                                   f"({', '.join(header) if header else 'chrom, pos, ref, alt'}); got {len(fields)}")
            chrom, pos_text, ref, alts = fields[0], fields[1], fields[2], [fields[3]]
            extra = dict(zip(header[4:], (f.strip() for f in fields[4:])))
        try:
            pos = int(pos_text)
        except ValueError:
            raise VariantError(f"{where}: position {pos_text!r} is not an integer") from None
        if pos < 1:
            raise VariantError(f"{where}: position {pos} < 1 (positions are 1-based)")
        variants += [Variant(chrom.strip(), pos, ref.strip().upper(), alt.strip().upper(), where, extra)
                     for alt in alts]
    if not variants:
        raise VariantError(f"{path}: no variant lines (empty, or headers only); nothing to score: check the file")
    return variants


def is_snv(variant: Variant) -> bool:
    return len(variant.ref) == 1 and len(variant.alt) == 1 and variant.ref in BASE_INDEX \
        and variant.alt in BASE_INDEX and variant.ref != variant.alt


def centred_window(pos0: int, contig_len: int, window: int) -> tuple[int, int]:
    """[start, end) of a window of min(window, contig_len) bases with 0-based pos0 as near its centre
    as the contig ends allow."""
    size = min(window, contig_len)
    start = min(max(pos0 - size // 2, 0), contig_len - size)
    return start, start + size


@dataclass
class _Job:
    variant: Variant
    key: tuple[str, int, int]  # (chrom, start, end) of its window
    offset: int  # 0-based position of the variant inside the window


def plan(variants: list[Variant], fasta, window: int, on_ref_mismatch: str = "report"):
    """Check every variant against the FASTA; return (jobs to score, {index: status} for the rest)."""
    jobs: dict[int, _Job] = {}
    statuses: dict[int, str] = {}
    lengths: dict[str, int] = {}
    for i, v in enumerate(variants):
        if v.chrom not in lengths:
            try:
                lengths[v.chrom] = contig_length(fasta, v.chrom, f"{v.where}: ")
            except FastaError as exc:
                raise VariantError(str(exc)) from None
        if v.pos > lengths[v.chrom]:
            raise VariantError(f"{v.where}: position {v.pos} is outside contig {v.chrom!r} "
                               f"(length {lengths[v.chrom]}, positions are 1-based)")
        if not is_snv(v):
            statuses[i] = "not_snv"
            continue
        fasta_base = fetch(fasta, v.chrom, v.pos - 1, v.pos).upper()
        if fasta_base != v.ref:
            if on_ref_mismatch == "error":
                raise VariantError(f"{v.where}: REF {v.ref} does not match the FASTA base {fasta_base} at "
                                   f"{v.chrom}:{v.pos} (1-based); check the reference build")
            statuses[i] = f"ref_mismatch:fasta={fasta_base}"
            continue
        start, end = centred_window(v.pos - 1, lengths[v.chrom], window)
        jobs[i] = _Job(v, (v.chrom, start, end), v.pos - 1 - start)
    return jobs, statuses


@torch.no_grad()
def score_variants(model, fasta_path: str | Path, variants: list[Variant], window: int = 1024,
                   batch_size: int = 8, device: str | torch.device = "cpu",
                   on_ref_mismatch: str = "report") -> list[dict]:
    """One row per variant (input order): COLUMNS. `model(ids).logits` is (B, L, vocab)."""
    if not getattr(model, "lm_head_trained", True):
        raise VariantError("zero-shot scoring needs the model's LM head, and this export has none that was trained "
                           "(imported from a fine-tuned JanusDNA checkpoint); import the pretrained checkpoint instead")
    objective = getattr(getattr(model, "config", None), "objective", "janus")
    mode = getattr(getattr(model, "config", None), "tokenizer", "janus")  # the ids the model was trained on
    if objective != "janus":
        # mlm logits at p saw base p (unless masked), clm logits at p predict p+1 from the left only:
        # neither is the score defined above, and reading them as if it were would be silently wrong
        raise VariantError(f"zero-shot scoring needs a model trained with objective janus; this one was trained "
                           f"with objective {objective}, whose logits at a position do not give P(base | both "
                           f"sides without it). Use launch/finetune.py or launch/embed.py with this export instead")
    fasta = open_fasta(fasta_path)
    jobs, statuses = plan(variants, fasta, window, on_ref_mismatch)
    windows: dict[tuple[str, int, int], list[int]] = {}  # window -> variant indices (multi-allelic share one)
    for i, job in jobs.items():
        windows.setdefault(job.key, []).append(i)
    by_length: dict[int, list[tuple[str, int, int]]] = {}
    for key in windows:
        by_length.setdefault(key[2] - key[1], []).append(key)
    base_ids = torch.tensor(BASE_IDS)
    results: dict[int, tuple[float, float, float]] = {}
    for keys in by_length.values():
        for b in range(0, len(keys), batch_size):
            chunk = keys[b:b + batch_size]
            try:
                ids = torch.stack([encode(fetch(fasta, c, s, e), mode) for c, s, e in chunk]).to(device)  # (b, W)
            except TokenizerError as exc:
                raise FastaError(f"{fasta_path}: a window among {chunk}: {exc}") from None
            logits = model(ids).logits.float()  # (b, W, V)
            for row, key in enumerate(chunk):
                for i in windows[key]:
                    job = jobs[i]
                    logp = torch.log_softmax(logits[row, job.offset, base_ids.to(logits.device)], -1).cpu()  # (4,)
                    ref, alt = float(logp[BASE_IDS.index(BASE_INDEX[job.variant.ref])]), \
                        float(logp[BASE_IDS.index(BASE_INDEX[job.variant.alt])])
                    results[i] = (alt - ref, ref, alt)
    rows = []
    for i, v in enumerate(variants):
        score, ref, alt = results.get(i, (math.nan, math.nan, math.nan))
        rows.append({"chrom": v.chrom, "pos": v.pos, "ref": v.ref, "alt": v.alt, "score": score,
                     "logp_ref": ref, "logp_alt": alt, "status": statuses.get(i, "ok")})
    return rows


def write_scores(rows: list[dict], out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(out_path)
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r["chrom"], r["pos"], r["ref"], r["alt"]] +
                            ["NA" if math.isnan(r[k]) else f"{r[k]:.6f}" for k in ("score", "logp_ref", "logp_alt")] +
                            [r["status"]])
    os.replace(tmp, out_path)
    return out_path
