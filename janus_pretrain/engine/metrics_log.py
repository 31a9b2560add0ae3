"""TensorBoard scalars, the stdout progress line and metrics.jsonl (rank 0 only).

metrics.jsonl lives in the run directory (the parent of checkpoint.dir): one JSON object per
optimizer step, {"step", "loss", "ce_loss", "aux_loss", "lr", "grad_norm", "tokens_seen",
"skipped"}, losses averaged over all ranks and micro batches; with probes (eval.every), lines
{"step", "probe/<task>/<metric>": ...} in between. On resume, lines after the resumed
step are dropped first, so the file always describes one consistent history (what an
uninterrupted run would have written).
"""
from __future__ import annotations

import json
import math
import resource
from pathlib import Path

import torch

from janus_pretrain.atomic_io import atomic_write_text


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _fmt_rate(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


class MetricsLogger:
    def __init__(self, tensorboard_dir: str, metrics_file: Path, enabled: bool, total_steps: int):
        self.enabled, self.total_steps = enabled, total_steps
        self.metrics_file = metrics_file
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            # opened in truncate_after, once the resumed step is known (see there)
            self._open_writer = lambda purge_step: SummaryWriter(tensorboard_dir, purge_step=purge_step)
            metrics_file.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Keep only the steps <= `step` (a resumed run re-does the ones after its checkpoint):
        in metrics.jsonl, and in TensorBoard through its purge_step, which hides the events of
        steps > `step` that a killed run had already written."""
        if not self.enabled:
            return
        if self.writer is None:
            self.writer = self._open_writer(step + 1 if step > 0 else None)
        if not self.metrics_file.is_file():
            return
        kept = [line for line in self.metrics_file.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text(self.metrics_file, "".join(line + "\n" for line in kept))

    def step(self, record: dict) -> None:
        """Every optimizer step: one line of metrics.jsonl."""
        if not self.enabled:
            return
        with open(self.metrics_file, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(key, value, step)

    def probes(self, step: int, values: dict[str, float]) -> None:
        """Probe metrics (janus_pretrain.evaluation.pretraining_probes): TensorBoard, a line of their own
        in metrics.jsonl ({"step", "probe/<task>/<metric>": ...}, no "loss" key), and one stdout line."""
        if not self.enabled:
            return
        self.scalars(step, values)
        finite = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        with open(self.metrics_file, "a") as handle:
            handle.write(json.dumps({"step": step, **finite}) + "\n")
        shown = " ".join(f"{k.removeprefix('probe/')}={v:.3f}" for k, v in values.items()
                         if "/valid_" not in k and math.isfinite(v))
        print(f"probe at step {step}: {shown}", flush=True)

    def experts(self, step: int, counts: dict[str, torch.Tensor]) -> None:
        """Tokens routed to each expert of each MoE layer (summed over ranks) since the last log."""
        if self.writer is None:
            return
        for layer, per_expert in counts.items():
            total = max(1, int(per_expert.sum()))
            for expert, count in enumerate(per_expert.tolist()):
                self.writer.add_scalar(f"experts/{layer}/expert_{expert:02d}", count, step)
            self.writer.add_scalar(f"experts/{layer}/max_over_mean",
                                   float(per_expert.max()) * len(per_expert) / total, step)

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
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
