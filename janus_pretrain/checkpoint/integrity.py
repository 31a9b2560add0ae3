"""Trust in what we read back: file digests, a pickle scan that never executes code, finiteness.

- Digests: sha256 of every file of a checkpoint tag, recorded in its meta.json before COMPLETE
  (and of model.safetensors in an export's config.json). torch.load does not check the zip
  CRCs, so flipped bytes in an optimizer partition would otherwise load as NaN experts.
- Pickle scan: DeepSpeed's files need full pickle (its loss scaler, ZeRO enums), so before any
  of our files is unpickled we list the globals its pickle references (torch's scanner reads
  the opcodes, it runs nothing) and refuse any outside ALLOWED_GLOBALS: a planted payload such
  as os.system names a global that is not on the list. Our own files (rank_R.pt, experts) hold
  only tensors and plain Python values and load with weights_only=True.
- Finiteness: a save whose parameters or optimizer states hold NaN/inf is refused.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from janus_pretrain import deepspeed_internals as ds
from janus_pretrain.digests import DIGEST, file_digest

# every global DeepSpeed's ZeRO-1/2 files reference beyond torch's own safe set (listed from fp32
# and bf16 checkpoints of deepspeed 0.19, tests/test_checkpoint_integrity.py); none runs code
ALLOWED_GLOBALS = frozenset({
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
})


class IntegrityError(ValueError):
    """A file that fails verification; the message names it and what to do."""


def verify_digests(folder: Path, expected: dict[str, str], names: list[str] | None = None) -> None:
    """Check `names` (default: every recorded file) of `folder` against their recorded digests."""
    for name in names if names is not None else sorted(expected):
        path = folder / name
        if name not in expected:
            raise IntegrityError(f"{path}: no digest recorded for this file in {folder / 'meta.json'}")
        if not path.is_file():
            raise IntegrityError(f"{path}: file missing (its digest is recorded in meta.json)")
        got = file_digest(path)
        if got != expected[name]:
            raise IntegrityError(f"{path}: {DIGEST} mismatch (recorded {expected[name][:12]}..., on disk "
                                 f"{got[:12]}...): the file was damaged after it was written")


def unsafe_globals(path: Path) -> list[str]:
    """Globals the file's pickle references that are not on ALLOWED_GLOBALS (nothing is executed)."""
    if not zipfile.is_zipfile(path):
        raise IntegrityError(f"{path}: not a torch zip archive (damaged, or written by something else)")
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:  # a damaged archive or pickle stream
        raise IntegrityError(f"{path}: cannot read its pickle ({type(exc).__name__}: {exc})") from None
    return sorted(set(found) - ALLOWED_GLOBALS)


def check_pickle_safe(path: Path, trust: bool = False) -> None:
    """Refuse a file whose pickle would call anything we never write, unless trusted explicitly."""
    if trust:
        return
    bad = unsafe_globals(path)
    if bad:
        raise IntegrityError(
            f"{path}: refusing to unpickle: it references {', '.join(bad[:5])}, which janus-pretrain never "
            f"writes (loading could run arbitrary code); if you trust whoever wrote this checkpoint, pass "
            f"--trust-checkpoint (converter) or set checkpoint.trust_pickles=true")


def nonfinite_names(named: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors holding NaN/inf (one host sync for all of them)."""
    floats = [(n, t) for n, t in named.items() if t is not None and t.is_floating_point() and t.numel()]
    if not floats:
        return []
    flags = torch.stack([~torch.isfinite(t).all() for _, t in floats]).cpu().tolist()
    return [n for (n, _), bad in zip(floats, flags) if bad]


def training_tensors(engine) -> dict[str, torch.Tensor]:
    """Everything a save would persist that must be finite: module parameters, ZeRO's fp32
    master partitions and the AdamW moments of whatever the inner optimizer holds."""
    tensors = {f"param {n}": p.detach() for n, p in engine.module.named_parameters()}
    optimizer = engine.optimizer
    for i, flat in enumerate(ds.fp32_partitions(optimizer)):
        tensors[f"fp32 master partition of group {i}"] = flat.detach()
    inner = ds.inner_optimizer(optimizer)
    for k, (param, state) in enumerate(getattr(inner, "state", {}).items()):
        for key in ("exp_avg", "exp_avg_sq"):
            if isinstance(state.get(key), torch.Tensor):
                tensors[f"optimizer {key} #{k}"] = state[key]
    return tensors


def load_ours(path: Path) -> dict:
    """A file we wrote (rank state, experts): tensors and plain values only, so no pickle code runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IntegrityError(f"{path}: cannot be loaded safely ({type(exc).__name__}: {str(exc).splitlines()[0]})") \
            from None
