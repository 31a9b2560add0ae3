"""Positive control for "does pretraining help?": a genome where there is something to learn.

The measured answers on the bundled genomes (docs/evaluation.md section 5) are "not at this
scale". This bench checks that such a "no" is about scale, not plumbing: it builds a synthetic
genome of uniform random bases with one of eight 12-mer motifs planted about every 150 bp, and runs the
whole user path on it with the `janus` command, in one process on CPU:

    shard -> pretrain (configs/tiny.yaml, --steps) -> convert -> evaluate (zero-shot, 3 seeds)

The zero-shot task scores single-base variants in the held-out test block: at the centre of a
planted motif (label 1: a model that learned the motif predicts the reference base there with
confidence, so the variant scores low) vs background bases at least 20 bp from any motif
(label 0: unpredictable, every base about equally likely). A random-initialised model of the same
architecture is the baseline in the same run (AUROC about 0.5). Prints AUROC pretrained, random
(mean +- std over seeds) and the difference; the run directory keeps every output.

    python bench/positive_control.py [--steps 800] [--out runs/positive_control]   # about 7 minutes

Measured figures are in docs/evaluation.md ("Positive control").
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MOTIF_LENGTH, MOTIFS, SPACING, GENOME_BP, CONTIG = 12, 8, 150, 400_000, "synthetic"


def make_genome(out: Path, seed: int = 0) -> tuple[str, list[int]]:
    """Uniform random bases with one of MOTIFS 12-mers planted every SPACING +- 30 bp; (genome,
    motif starts). Several motifs, so that a random model's fixed guess inside one motif's context
    averages out in the baseline."""
    rng = random.Random(seed)
    motifs = ["".join(rng.choice("ACGT") for _ in range(MOTIF_LENGTH)) for _ in range(MOTIFS)]
    bases = [rng.choice("ACGT") for _ in range(GENOME_BP)]
    starts, position = [], 100
    while position + MOTIF_LENGTH < GENOME_BP - 100:
        bases[position:position + MOTIF_LENGTH] = rng.choice(motifs)
        starts.append(position)
        position += SPACING + rng.randrange(-30, 31)
    genome = "".join(bases)
    (out / "synthetic.fa").write_text(f">{CONTIG}\n" + "\n".join(genome[i:i + 80] for i in range(0, GENOME_BP, 80)) + "\n")
    (out / "genomes.yaml").write_text("species:\n  - name: synthetic\n    fasta: synthetic.fa\n    weight: 1.0\n"
                                      "    valid_fraction: 0.1\n    test_fraction: 0.1\n")
    return genome, starts


def write_variants(out: Path, genome: str, starts: list[int], per_class: int = 200, seed: int = 0) -> Path:
    """Motif-centre vs background SNVs in the last 10% of the genome (the pretraining test block)."""
    rng = random.Random(seed)
    test_start = int(GENOME_BP * 0.9)
    centres = [s + MOTIF_LENGTH // 2 for s in starts if s >= test_start]
    near = {p for s in starts for p in range(s - 20, s + MOTIF_LENGTH + 20)}
    background = [p for p in range(test_start + 20, GENOME_BP - 20) if p not in near]
    rows = [(p, 1) for p in rng.sample(centres, min(per_class, len(centres)))]
    rows += [(p, 0) for p in rng.sample(background, len(rows))]
    lines = ["chrom\tpos\tref\talt\tlabel"]
    for position, label in sorted(rows):
        ref = genome[position]
        lines.append(f"{CONTIG}\t{position + 1}\t{ref}\t{rng.choice([b for b in 'ACGT' if b != ref])}\t{label}")
    path = out / "variants.tsv"
    path.write_text("\n".join(lines) + "\n")
    (out / "suite.yaml").write_text(
        "name: positive_control\ndescription: planted-motif centres vs background, held-out block\n"
        "recipe: {window: 256, batch_size: 16}\ntasks:\n  - name: motif_snv\n    kind: zero_shot_snv\n"
        "    variants: variants.tsv\n    fasta: synthetic.fa\n    label_column: label\n    metrics: [auroc]\n")
    return path


def janus(*args: str, log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"$ janus {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run([sys.executable, "-m", "janus_pretrain", *args], cwd=log.parent, env=env,
                              stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"janus {args[0]} failed (exit {done.returncode}); see {log}")
    print(f"janus {args[0]}: {time.perf_counter() - started:.0f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800, help="pretraining steps (2,048 tokens each)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "positive_control")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    log.write_text("")
    genome, starts = make_genome(out)
    write_variants(out, genome, starts)
    janus("shard", "--genomes", "genomes.yaml", "--out", "shards", "--window-bp", "4096", log=log)
    janus("pretrain", "--config", str(REPO / "configs" / "tiny.yaml"), "--resume", "none",
          "--set", f"data.manifest={out / 'shards' / 'manifest.json'}", "--set", "parallel.ep_size=1",
          "--set", f"train.steps={args.steps}", "--set", "train.eval_every=0", "--set", "checkpoint.every=0",
          "--set", f"checkpoint.dir={out / 'checkpoints'}", "--set", f"logging.dir={out / 'tensorboard'}", log=log)
    janus("convert", "--checkpoint", "checkpoints", "--out", "export", log=log)
    janus("evaluate", "--model", "export", "--suite", "suite.yaml", "--out", "eval", "--seeds", str(args.seeds),
          "--baselines", "random", log=log)
    results = json.loads((out / "eval" / "results.json").read_text())["tasks"]["motif_snv"]["summary"]
    pretrained, random_init = results["pretrained"]["auroc"], results["random"]["auroc"]
    print(f"motif-centre vs background SNVs, AUROC: pretrained {pretrained['mean']:.3f} | random init "
          f"{random_init['mean']:.3f} +- {random_init['std']:.3f} (n={random_init['n']}) | difference "
          f"{pretrained['mean'] - random_init['mean']:+.3f}; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
