"""Watchdog: a rank that makes no progress (stopped, hung in I/O, deadlocked) ends the job quickly
with a message naming it, instead of every rank waiting out the 30-minute collective timeout.

Each rank writes a heartbeat file (run_dir/heartbeat/rank_<R>.json: step and phase) whenever it
reaches a new phase of a step. A daemon thread on every rank reads all heartbeats every few
seconds and remembers, on its own monotonic clock, when each one last changed (so clocks of
different nodes never need to agree). When some rank's heartbeat has not changed for the
timeout, every healthy rank prints which rank stalled and where, and exits with
WATCHDOG_EXIT_CODE, which launch/slurm_pretrain.sh requeues like a preemption.

The timeout is max(train.watchdog_s, 20 x the slowest step seen so far), so long steps
(1 Mbp samples, first-step compilation) never trip it. The heartbeat directory is beside the
checkpoints, which every node of a run must share anyway.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from janus_pretrain.atomic_io import atomic_write_text

WATCHDOG_EXIT_CODE = 76  # a rank stalled; requeue (see launch/slurm_pretrain.sh)
STEP_TIME_FACTOR = 20  # the timeout is at least this many times the slowest step


class Watchdog:
    def __init__(self, run_dir: Path, rank: int, world_size: int, timeout_s: float, poll_s: float | None = None):
        self.folder = Path(run_dir) / "heartbeat"
        self.rank, self.world_size = rank, world_size
        self.base_timeout = timeout_s
        self.poll_s = poll_s or max(0.5, min(10.0, timeout_s / 10))
        self.slowest_step = 0.0
        self._beat = 0
        self._seen: dict[int, tuple[str, float]] = {}  # rank -> (heartbeat text, monotonic time it changed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def timeout(self) -> float:
        return max(self.base_timeout, STEP_TIME_FACTOR * self.slowest_step)

    def path(self, rank: int) -> Path:
        return self.folder / f"rank_{rank}.json"

    def beat(self, step: int, phase: str) -> None:
        """This rank reached `phase` of `step` (cheap: one small atomic file write)."""
        self._beat += 1
        atomic_write_text(self.path(self.rank), json.dumps({"step": step, "phase": phase, "beat": self._beat,
                                                            "pid": os.getpid()}))

    def step_took(self, seconds: float) -> None:
        self.slowest_step = max(self.slowest_step, seconds)

    def start(self, step: int) -> "Watchdog":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.beat(step, "start")
        self._thread = threading.Thread(target=self._watch, name="janus-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def stalled(self, now: float) -> list[tuple[int, float, str]]:
        """(rank, seconds without progress, last heartbeat) of every stalled rank."""
        found = []
        for rank in range(self.world_size):
            try:
                text = self.path(rank).read_text()
            except OSError:
                text = "(no heartbeat yet)"
            last = self._seen.get(rank)
            if last is None or last[0] != text:
                self._seen[rank] = (text, now)
            elif now - last[1] > self.timeout:
                found.append((rank, now - last[1], text))
        return found

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            stalled = self.stalled(time.monotonic())
            if stalled and not self._stop.is_set():
                for rank, seconds, text in stalled:
                    where = _describe(text)
                    print(f"watchdog (rank {self.rank}): rank {rank} made no progress for {seconds:.0f} s "
                          f"(timeout {self.timeout:.0f} s; last seen: {where}); stopping the job with exit code "
                          f"{WATCHDOG_EXIT_CODE} so it can be requeued and resume from the latest checkpoint",
                          file=sys.stderr, flush=True)
                os._exit(WATCHDOG_EXIT_CODE)  # a collective may be blocked: no clean shutdown is possible


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"step {info['step']}, {info['phase']}, pid {info.get('pid')}"
    except (ValueError, KeyError, TypeError):
        return text
