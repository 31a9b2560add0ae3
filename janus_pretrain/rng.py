"""Every random generator the package draws from, captured and restored as one value.

torch (CPU, and the current CUDA device when there is one), numpy's global generator and
python's `random`. The captured form holds only tensors and plain values, so a checkpoint's rank
file that stores it loads with torch.load(weights_only=True) (checkpoint/training_state.py), and
the probes during pretraining put every generator back after they ran
(evaluation/pretraining_probes.py): one routine for both, so neither can forget a generator.
"""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def capture() -> dict:
    """torch, numpy and python RNG states as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore(state: dict) -> None:
    """Put back what capture() returned."""
    torch.set_rng_state(state["torch"])
    n, py = state["numpy"], state["python"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@contextlib.contextmanager
def preserved():
    """Every RNG state as it was on entry, restored on exit (also on error)."""
    state = capture()
    try:
        yield
    finally:
        restore(state)
