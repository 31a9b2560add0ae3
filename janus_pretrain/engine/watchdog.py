"""Watchdog: a rank that makes no progress (stopped, hung in I/O, deadlocked) ends the job quickly
with a message naming it, instead of every rank waiting out the 30-minute collective timeout.

Each rank writes a heartbeat file (run_dir/heartbeat/rank_<R>.json: step and phase) whenever it
reaches a new phase of a step. A daemon thread on every rank reads all heartbeats every few
seconds and remembers, on its own monotonic clock, when each one last changed (so clocks of
different nodes never need to agree). When some rank's heartbeat has not changed for the
timeout, every healthy rank prints which rank stalled and where, and exits with
WATCHDOG_EXIT_CODE, which launch/slurm_pretrain.sh requeues like a preemption.

A rank waiting in a collective for a stalled rank makes no progress either, so each watchdog
thread also writes a liveness file every poll: a rank whose step and liveness both stopped is
"not responding" (stopped, hung or dead: the cause); one that is still alive is only "waiting".
The launcher kills a not-responding rank after the others exit, so srun reports its signal, not
76; the exiting ranks therefore also leave a note in $JANUS_JOB_STATUS (set by the Slurm script)
saying that the watchdog ended the job.

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
        self._alive_seen: dict[int, tuple[str, float]] = {}  # rank -> (liveness text, time it changed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def timeout(self) -> float:
        return max(self.base_timeout, STEP_TIME_FACTOR * self.slowest_step)

    def path(self, rank: int) -> Path:
        return self.folder / f"rank_{rank}.json"

    def alive_path(self, rank: int) -> Path:
        return self.folder / f"alive_{rank}"

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

    @staticmethod
    def _since_change(seen: dict, rank: int, path: Path, now: float) -> tuple[float, str]:
        """Seconds since the file's content last changed (as this thread saw it), and the content."""
        try:
            text = path.read_text()
        except OSError:
            text = "(none yet)"
        last = seen.get(rank)
        if last is None or last[0] != text:
            seen[rank] = last = (text, now)
        return now - last[1], text

    def progress(self, now: float) -> list[tuple[int, float, str, bool]]:
        """(rank, seconds without progress, last heartbeat, still alive) of every rank."""
        found = []
        for rank in range(self.world_size):
            seconds, text = self._since_change(self._seen, rank, self.path(rank), now)
            quiet, _ = self._since_change(self._alive_seen, rank, self.alive_path(rank), now)
            found.append((rank, seconds, text, rank == self.rank or quiet < self.timeout / 2))
        return found

    def stalled(self, now: float) -> list[tuple[int, float, str, bool]]:
        """The ranks of progress(now) without progress for the timeout."""
        return [state for state in self.progress(now) if state[1] > self.timeout]

    def _watch(self) -> None:
        lives = 0
        while not self._stop.wait(self.poll_s):
            lives += 1
            atomic_write_text(self.alive_path(self.rank), str(lives))
            ranks = self.progress(time.monotonic())
            if any(seconds > self.timeout for _, seconds, _, _ in ranks) and not self._stop.is_set():
                self._report(ranks)
                os._exit(WATCHDOG_EXIT_CODE)  # a collective may be blocked: no clean shutdown is possible

    def _report(self, ranks: list[tuple[int, float, str, bool]]) -> None:
        """ranks: progress(now). A live rank that has not moved for half the timeout waits for the dead
        ones (it blocked in a collective after the dead rank's last heartbeat, so its own quiet time
        can still be under the timeout when the dead rank's passes it)."""
        stalled = [s for s in ranks if s[1] > self.timeout]
        dead = [s for s in stalled if not s[3]]
        waiting = [s[0] for s in ranks if s[3] and s[1] > self.timeout / 2] if dead else [s[0] for s in stalled]
        lines = []
        for rank, seconds, text, _ in dead or stalled:
            state = "has not responded" if dead else "made no progress"
            lines.append(f"watchdog (rank {self.rank}): rank {rank} {state} for {seconds:.0f} s (timeout "
                         f"{self.timeout:.0f} s; last seen: {_describe(text)})"
                         + (f"; ranks {waiting} wait for it" if dead and waiting else "")
                         + f"; stopping the job with exit code {WATCHDOG_EXIT_CODE} so it can be requeued and "
                           f"resume from the latest checkpoint")
        print("\n".join(lines), file=sys.stderr, flush=True)
        status = os.environ.get("JANUS_JOB_STATUS")
        if status:  # the launcher may report the killed stalled rank's signal instead of 76
            try:
                Path(status).mkdir(parents=True, exist_ok=True)
                atomic_write_text(Path(status) / f"watchdog_rank_{self.rank}", "\n".join(lines) + "\n")
            except OSError:
                pass


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"step {info['step']}, {info['phase']}, pid {info.get('pid')}"
    except (ValueError, KeyError, TypeError):
        return text
