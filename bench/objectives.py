#!/usr/bin/env python
"""janus vs mlm vs clm on one architecture: held-out bits per base at equal tokens and equal time.

    python data_prep/shard_genomes.py --genomes configs/genomes/bundled.yaml --out runs/objectives/shards --window-bp 4096
    python bench/objectives.py                    # about 30 min on 2 busy CPU cores
    python bench/objectives.py --steps 20 --evals 2 --out runs/objectives_smoke   # a smoke run

Every run is launch/pretrain.py's own build order (engine.run.run_pretraining: DeepSpeed ZeRO-2,
one rank) on the base config (configs/tiny.yaml) with only model.objective changed, and a Trainer
that records, at each validation, the tokens seen and the training wall time so far (the sum of
the optimizer steps' times, validation excluded). Held-out metric: engine/held_out.py's
valid/all/bpc, the same per-base cross-entropy for every objective (model/base_prediction.py).

1. Equal tokens: each objective trains --steps optimizer steps of the same batches.
2. Equal wall-clock: an objective whose step was more than 10% faster than the slowest one's is
   trained again, from scratch with its own full schedule, for as many steps as fit in the
   slowest run's training time.

Writes OUT/<run>/curve.jsonl per run, OUT/results.json, and the plot (--plot, a PNG).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OBJECTIVES = ("janus", "mlm", "clm")
FASTER = 1.10  # an objective this much faster per step than the slowest gets an equal-time run


def run_overrides(args, objective: str, steps: int, out: Path) -> list[str]:
    """--set overrides of the base config for one run: everything but the objective and the
    length is shared."""
    every = max(1, steps // args.evals)
    return [f"model.objective={objective}", f"data.manifest={args.manifest}", f"data.seq_len={args.seq_len}",
            "data.num_workers=0", f"data.valid_max_batches={args.valid_batches}",
            f"train.micro_batch={args.micro_batch}", "train.grad_accum=1", "train.global_batch_tokens=0",
            f"train.steps={steps}", f"train.eval_every={every}", f"train.seed={args.seed}",
            "parallel.ep_size=1", f"checkpoint.dir={out / 'checkpoints'}", "checkpoint.every=0",
            "checkpoint.resume=none", f"logging.dir={out / 'tensorboard'}", f"logging.every={every}",
            *args.overrides]


# ---- one run (a child process: DeepSpeed's process group lives and dies with it) ----
def worker(spec_path: str) -> int:
    from janus_pretrain.config import load_config
    from janus_pretrain.engine.run import run_pretraining
    from janus_pretrain.engine.trainer import Trainer
    from janus_pretrain.engine.held_out import held_out_metrics

    spec = json.loads(Path(spec_path).read_text())
    config = load_config(spec["base_config"], spec["overrides"])
    curve_path = Path(spec["curve"])
    curve_path.unlink(missing_ok=True)

    class TimedTrainer(Trainer):
        """Records (step, tokens, training seconds, validation metrics) at every validation."""
        train_seconds = 0.0

        def train_step(self, batches):
            if self.step == 0 and not curve_path.exists():
                self._validate()  # the untrained model: every curve starts at its own init
            result = super().train_step(batches)
            self.train_seconds += result.time_s
            return result

        def _validate(self):
            started = time.perf_counter()
            results = held_out_metrics(self.engine.module, self.valid_batches(), self.species_names, self.ctx.device,
                               self.plan.seq_len)
            self.log.scalars(self.step, results)
            record = {"step": self.step, "tokens": self.tokens_seen, "train_seconds": self.train_seconds,
                      "eval_seconds": time.perf_counter() - started, **results}
            with curve_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            self.log.message(f"validation at step {self.step}: bpc {results.get('valid/all/bpc', math.nan):.4f} "
                             f"accuracy {results.get('valid/all/accuracy', math.nan):.4f}")

    return run_pretraining(config, trainer_class=TimedTrainer)


def train(args, name: str, objective: str, steps: int) -> list[dict]:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    spec = {"base_config": str(args.config), "overrides": run_overrides(args, objective, steps, out),
            "curve": str(out / "curve.jsonl")}
    (out / "spec.json").write_text(json.dumps(spec, indent=1))
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {objective}, {steps} steps", flush=True)
    with (out / "log.txt").open("w") as log:
        code = subprocess.call([sys.executable, __file__, "--worker", str(out / "spec.json")], stdout=log,
                               stderr=subprocess.STDOUT, cwd=REPO)
    if code != 0:
        raise SystemExit(f"error: run {name} exited with {code}; see {out / 'log.txt'}")
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines() if line.strip()]
    counts = [line for line in (out / "log.txt").read_text().splitlines() if " parameters, " in line]
    last = curve[-1]
    print(f"    bpc {last['valid/all/bpc']:.4f} after {last['tokens']:,} tokens, {last['train_seconds']:.0f} s of "
          f"training; {counts[0] if counts else ''}", flush=True)
    return curve


def seconds_per_step(curve: list[dict]) -> float:
    return curve[-1]["train_seconds"] / max(curve[-1]["step"], 1)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"janus": "tab:blue", "mlm": "tab:orange", "clm": "tab:green"}
    fig, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name, run in results["runs"].items():
        # the untrained point (about 4 bits: a random 16-way head) would flatten every curve
        curve, objective = [c for c in run["curve"] if c["step"] > 0], run["objective"]
        style = "-" if run["phase"] == "equal_tokens" else "--"
        label = f"{objective} ({run['steps']} steps)"
        by_tokens.plot([c["tokens"] / 1e6 for c in curve], [c["valid/all/bpc"] for c in curve], style,
                       color=colours[objective], marker="o", markersize=3, label=label)
        by_time.plot([c["train_seconds"] / 60 for c in curve], [c["valid/all/bpc"] for c in curve], style,
                     color=colours[objective], marker="o", markersize=3, label=label)
    by_tokens.set_xlabel("training tokens (millions)")
    by_time.set_xlabel("training wall time (minutes, validation excluded)")
    by_tokens.set_ylabel("held-out bits per base")
    for axis in (by_tokens, by_time):
        axis.axhline(2.0, color="grey", lw=0.5)  # 2 bits: uniform over A/C/G/T
        axis.grid(alpha=0.3)
    by_tokens.legend(fontsize=8)
    by_time.legend(fontsize=8)
    fig.suptitle(results["title"], fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"), help="base run YAML")
    parser.add_argument("--manifest", default=str(REPO / "runs" / "objectives" / "shards" / "manifest.json"))
    parser.add_argument("--out", default=str(REPO / "runs" / "objectives"))
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--steps", type=int, default=240, help="optimizer steps of the equal-token runs")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--evals", type=int, default=5, help="validations per run (plus at step 0)")
    parser.add_argument("--valid-batches", type=int, default=3, help="data.valid_max_batches (per species)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-time-ratio", type=float, default=4.0, help="cap on equal-time run lengthening")
    parser.add_argument("--plot", default=str(REPO / "docs" / "objectives.png"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--replot", metavar="RESULTS_JSON", help="only redraw --plot from a results.json")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), Path(args.plot))
        return 0
    args.manifest = str(Path(args.manifest).resolve())
    if not Path(args.manifest).is_file():
        print(f"error: {args.manifest} not found; shard the bundled genomes first (see --help)", file=sys.stderr)
        return 2
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    started = time.time()
    runs = {}
    for objective in objectives:
        runs[objective] = {"objective": objective, "phase": "equal_tokens", "steps": args.steps,
                           "curve": train(args, objective, objective, args.steps)}
    slowest = max(seconds_per_step(r["curve"]) for r in runs.values())
    for objective in objectives:
        ratio = min(slowest / seconds_per_step(runs[objective]["curve"]), args.max_time_ratio)
        if ratio > FASTER:
            steps = int(round(args.steps * ratio))
            runs[f"{objective}_equal_time"] = {"objective": objective, "phase": "equal_time", "steps": steps,
                                               "curve": train(args, f"{objective}_equal_time", objective, steps)}
    tokens_per_step = args.micro_batch * args.seq_len
    results = {"title": f"{Path(args.config).name} model, seq_len {args.seq_len}, {tokens_per_step} tokens/step, "
                        f"seed {args.seed}: held-out bpc (valid split subset)",
               "settings": {k: v for k, v in vars(args).items() if k != "worker"},
               "tokens_per_step": tokens_per_step, "total_wall_seconds": time.time() - started, "runs": runs}
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, Path(args.plot))
    print(f"results: {Path(args.out) / 'results.json'}; plot: {args.plot}; "
          f"{(time.time() - started) / 60:.1f} min in all", flush=True)
    for name, run in runs.items():
        last = run["curve"][-1]
        print(f"  {name:18s} {run['steps']:5d} steps {last['tokens']:>10,} tokens {last['train_seconds']:7.0f} s "
              f"bpc {last['valid/all/bpc']:.4f} accuracy {last['valid/all/accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
