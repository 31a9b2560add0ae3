"""The end-of-run summary: one screen on rank 0, and <run dir>/run_summary.json with the same facts.

Fed by the run's counters (Progress: steps, tokens, NaN/inf steps skipped; whole run, resumes
included), this session (Session: its start and wall time), and the metrics logged: the best validation loss of each species from
validation.jsonl (so a resumed run still knows the validations before its restart) and the last
data/corrupt_samples logged (a whole-run count over all ranks). Written whenever training ends
in a way every rank agreed on: finished, preempted (exit 75, a requeue continues) or diverged
(exit 3); each new session of a run rewrites it. Not after an unexpected error.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from janus_pretrain.atomic_io import atomic_write_text

SUMMARY_FILE = "run_summary.json"  # <run dir>/run_summary.json
ENDINGS = {"finished": "finished", "preempted": "preempted: checkpoint saved, exit 75 (requeue or rerun to continue)",
           "diverged": "diverged: too many NaN/inf steps, exit 3 (see the error line)"}


@dataclass
class Session:
    """One process's part of a run: when its train() started, from which step, and the time of the
    sessions before it (up to the checkpoint it resumed)."""
    started: float  # time.perf_counter() at the start of train()
    first_step: int  # the step it resumed at (0 for a fresh run)
    seconds_before: float  # Progress.train_seconds of the resumed checkpoint


@dataclass
class BestValidation:
    loss: float  # lowest held-out loss (nats per base) logged for the species
    step: int  # the step it was logged at


@dataclass
class RunSummary:
    ended: str  # finished | preempted | diverged (ENDINGS)
    steps: int  # optimizer steps done over the whole run
    steps_this_session: int  # of those, done by this process (the rest were before its resume)
    tokens_seen: int  # tokens consumed on all ranks over the whole run
    tokens_this_session: int  # tokens consumed by this session (all ranks)
    wall_time_s: float  # this session's time in Trainer.train(): resume, steps, validation, checkpoints
    run_wall_time_s: float  # earlier sessions up to the checkpoint this one resumed + this session
    final_loss: float  # training loss of the last good step
    skipped_steps: int  # steps skipped for a NaN/inf loss or gradient, whole run
    corrupt_samples: int | None  # damaged samples dropped (data.on_corrupt: skip), whole run; None = not logged
    best_validation: dict[str, BestValidation] = field(default_factory=dict)  # by species; "all" = pooled
    locations: dict[str, str] = field(default_factory=dict)  # checkpoints, metrics, backends, this summary

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_this_session / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tokens_per_s"] = self.tokens_per_s
        out["final_loss"] = self.final_loss if math.isfinite(self.final_loss) else None
        return out

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def text(self) -> str:
        """At most a screen: a few fixed lines, one per validated species, one per location."""
        wall, run_wall = (str(timedelta(seconds=round(t))) for t in (self.wall_time_s, self.run_wall_time_s))
        lines = ["=" * 30 + " run summary " + "=" * 30,
                 f"ended            {ENDINGS[self.ended]}",
                 f"steps            {self.steps:,} ({self.steps_this_session:,} in this session)",
                 f"tokens           {self.tokens_seen:,} ({self.tokens_this_session:,} in this session)",
                 f"wall time        {wall} in this session ({run_wall} over the run), "
                 f"{self.tokens_per_s:,.0f} tokens/s",
                 f"final loss       {self.final_loss:.4f}",
                 f"skipped steps    {self.skipped_steps} (NaN/inf loss or gradient)",
                 f"corrupt samples  "
                 f"{'not logged' if self.corrupt_samples is None else self.corrupt_samples} dropped"]
        if self.best_validation:
            lines.append("best validation loss (step):")
            width = max(len(name) for name in self.best_validation)
            lines += [f"  {name:<{width}}  {best.loss:.4f} ({best.step})" for name, best in self.best_validation.items()]
        else:
            lines.append("best validation loss: no validation ran")
        width = max(len(name) for name in self.locations) if self.locations else 0
        lines += [f"{name:<{max(width, 16)}} {where}" for name, where in self.locations.items()]
        return "\n".join(lines)


def best_validation(path: Path) -> dict[str, BestValidation]:
    """The lowest valid/<species>/loss of each species in validation.jsonl, "all" first, then by name;
    ties keep the earliest step."""
    best: dict[str, BestValidation] = {}
    if not path.is_file():
        return best
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        for key, value in record.items():
            parts = key.split("/")
            if len(parts) != 3 or parts[0] != "valid" or parts[2] != "loss" or value is None:
                continue
            name = parts[1]
            if name not in best or value < best[name].loss:
                best[name] = BestValidation(loss=value, step=record["step"])
    return dict(sorted(best.items(), key=lambda item: (item[0] != "all", item[0])))


def summarize(progress, session: Session, log, run_dir: Path, checkpoint_dir: str, last_tag: str | None,
              tokens_per_step: int, wall_time_s: float, ended: str) -> RunSummary:
    """The summary of a training session that ended as `ended` (ENDINGS), on rank 0; writes
    run_summary.json. progress: the run's counters (checkpoint/meta.py's Progress), log: its
    engine/metrics_log.MetricsLogger (the files and backends it wrote to)."""
    corrupt = log.latest.get("data/corrupt_samples")
    locations = {"checkpoints": f"{checkpoint_dir} (latest: {last_tag or 'none'})", "metrics": str(log.metrics_file)}
    if log.validation_file.is_file():
        locations["validation"] = str(log.validation_file)
    locations.update(log.locations)
    locations["summary"] = str(run_dir / SUMMARY_FILE)
    steps_now = progress.step - session.first_step
    summary = RunSummary(ended=ended, steps=progress.step, steps_this_session=steps_now,
                         tokens_seen=progress.tokens_seen, tokens_this_session=steps_now * tokens_per_step,
                         wall_time_s=wall_time_s, run_wall_time_s=session.seconds_before + wall_time_s,
                         final_loss=progress.last_loss, skipped_steps=progress.bad_steps,
                         corrupt_samples=None if corrupt is None else int(corrupt),
                         best_validation=best_validation(log.validation_file), locations=locations)
    summary.write(run_dir / SUMMARY_FILE)
    return summary
