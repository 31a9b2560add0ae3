"""Preemption: a signal asks the run to stop cleanly at the next optimizer-step boundary.

Slurm sends the pre-timeout signal (`#SBATCH --signal=USR1@...`) and SIGTERM on preemption or
`scancel`. Neither may interrupt a step half-way: the handler only sets a flag. The trainer
all-reduces the flag after every optimizer step (a rank that got no signal still stops with the
others), saves a checkpoint, and the process exits with PREEMPTED_EXIT_CODE, on which the sbatch
script requeues the job; `--resume auto` then continues from that checkpoint.
"""
from __future__ import annotations

import signal
import threading

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"; the sbatch script requeues on it

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class PreemptionFlag:
    """Set by SIGUSR1/SIGTERM (or by `request()`), read once per optimizer step."""

    def __init__(self):
        self._event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "PreemptionFlag":
        """Route the stop signals here; only possible from the main thread (a no-op elsewhere).

        Install before starting data-loader workers: forked workers inherit the handler, so the
        signal Slurm sends to every process of the step does not kill them."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.request(signal.Signals(signum).name)

    def request(self, reason: str = "request") -> None:
        """Ask for a stop at the next step boundary (what the signal handler does)."""
        if not self._event.is_set():
            self.signal_name = reason
            self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


class Preempted(Exception):
    """Raised after the preemption checkpoint was written; the entry point exits with code 75."""

    def __init__(self, step: int, tag: str | None, reason: str, saved: bool = True):
        what = f"checkpoint '{tag}' saved" if saved else \
            f"no checkpoint saved (non-finite state); resume continues from '{tag or 'the start'}'"
        super().__init__(f"preempted ({reason}) after step {step}; {what}, "
                         f"exit code {PREEMPTED_EXIT_CODE} (requeue and rerun with --resume auto)")
        self.step, self.tag, self.reason = step, tag, reason
