"""Scalars to the chosen backends, the stdout progress line, metrics.jsonl and validation.jsonl
(rank 0 only).

metrics.jsonl lives in the run directory (the parent of checkpoint.dir): one JSON object per
optimizer step, {"step", "loss", "ce_loss", "aux_loss", "lr", "grad_norm", "tokens_seen",
"skipped"}, losses averaged over all ranks and micro batches; with probes (eval.every), lines
{"step", "probe/<task>/<metric>": ...} in between. validation.jsonl beside it: one line per
validation, {"step", "valid/<species>/loss", ".../bpc", ".../accuracy"} (species "all" included).
On resume, lines after the resumed step are dropped first, so each file always describes one
consistent history (what an uninterrupted run would have written); the backends
(logging.backends: tensorboard, csv, wandb; engine/logging_backends.py) do the same.
"""
from __future__ import annotations

import json
import math
import resource
from pathlib import Path

import torch

from janus_pretrain.atomic_io import atomic_write_text
from janus_pretrain.config import LoggingConfig
from janus_pretrain.engine.logging_backends import make_backends

METRICS_FILE = "metrics.jsonl"  # <run dir>/metrics.jsonl (see the module docstring)
VALIDATION_FILE = "validation.jsonl"  # <run dir>/validation.jsonl


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _fmt_rate(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def _truncate_jsonl(path: Path, step: int) -> None:
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _append_values(path: Path, step: int, values: dict[str, float]) -> None:
    """A line {"step", **values} with non-finite values as null (JSON has no NaN)."""
    _append_jsonl(path, {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in values.items()}})


class MetricsLogger:
    def __init__(self, config: LoggingConfig, run_dir: Path, enabled: bool, total_steps: int,
                 run_config: dict | None = None):
        """run_config: the whole run config as a dict (W&B shows it beside the run)."""
        self.enabled, self.total_steps = enabled, total_steps
        self.metrics_file, self.validation_file = run_dir / METRICS_FILE, run_dir / VALIDATION_FILE
        self.backends = make_backends(config, run_dir, run_config or {}) if enabled else {}
        self.opened = False  # backends open in truncate_after, once the resumed step is known
        self.latest: dict[str, float] = {}  # the last finite value of every scalar logged (for the run summary)
        self.locations: dict[str, str] = {}  # where each backend writes (directory, command or URL), once open
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Keep only the steps <= `step` (a resumed run re-does the ones after its checkpoint):
        in metrics.jsonl, validation.jsonl and every backend (TensorBoard through its purge_step,
        which hides the events of steps > `step` that a killed run had already written)."""
        if not self.enabled:
            return
        if not self.opened:
            for name, backend in self.backends.items():
                backend.open(step)
                self.locations[name] = backend.location()
            self.opened = True
        for path in (self.metrics_file, self.validation_file):
            _truncate_jsonl(path, step)

    def step(self, record: dict) -> None:
        """Every optimizer step: one line of metrics.jsonl."""
        if self.enabled:
            _append_jsonl(self.metrics_file, record)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.opened:
            return
        finite = {key: float(value) for key, value in values.items() if value is not None and math.isfinite(value)}
        self.latest.update(finite)
        events = [(key, value, step) for key, value in finite.items()]
        for backend in self.backends.values():
            backend.write_events(events)

    def validation(self, step: int, values: dict[str, float]) -> None:
        """Held-out loss, bits per base and accuracy per species: the backends and validation.jsonl."""
        if not self.enabled:
            return
        self.scalars(step, values)
        _append_values(self.validation_file, step, values)

    def probes(self, step: int, values: dict[str, float]) -> None:
        """Probe metrics (janus_pretrain.evaluation.pretraining_probes): TensorBoard, a line of their own
        in metrics.jsonl ({"step", "probe/<task>/<metric>": ...}, no "loss" key), and one stdout line."""
        if not self.enabled:
            return
        self.scalars(step, values)
        _append_values(self.metrics_file, step, values)
        shown = " ".join(f"{k.removeprefix('probe/')}={v:.3f}" for k, v in values.items()
                         if "/valid_" not in k and math.isfinite(v))
        print(f"probe at step {step}: {shown}", flush=True)

    def experts(self, step: int, counts: dict[str, torch.Tensor]) -> None:
        """Tokens routed to each expert of each MoE layer (summed over ranks) since the last log."""
        values = {}
        for layer, per_expert in counts.items():
            total = max(1, int(per_expert.sum()))
            values.update({f"experts/{layer}/expert_{expert:02d}": count
                           for expert, count in enumerate(per_expert.tolist())})
            values[f"experts/{layer}/max_over_mean"] = float(per_expert.max()) * len(per_expert) / total
        self.scalars(step, values)

    def progress(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        print(f"step {step}/{self.total_steps} | loss {values['train/loss']:.4f} (ce {values['train/ce_loss']:.4f}"
              f" aux {values['train/aux_loss']:.3f}) | lr {values['train/lr']:.2e} | gnorm {values['train/grad_norm']:.3f}"
              f" | {_fmt_rate(values['perf/tokens_per_s'])} tok/s | {values['perf/step_time_s']:.2f} s/step"
              f" | mem {values['perf/peak_memory_gb']:.2f} GB", flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def close(self) -> None:
        if self.opened:
            for backend in self.backends.values():
                backend.close()
            self.opened = False
