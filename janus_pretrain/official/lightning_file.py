"""Official JanusDNA Lightning checkpoints (.ckpt): read without running code, write for the official code.

A checkpoint written by the official train.py is a torch zip whose pickle holds the state_dict,
optimizer and scheduler states, loop counters, callback states and `hyper_parameters`: the whole
Hydra config as an omegaconf DictConfig. Reading it with torch.load(weights_only=True) refuses
the omegaconf classes, and reading it with full pickle would run whatever the file names. So it
is read by torch's restricted unpickler with exactly the globals an official file references
(listed from real files: collections.OrderedDict/defaultdict, typing.Any, dict/list/int, torch
storages and _rebuild_tensor_v2 are torch's own or plain; the five omegaconf classes are mapped
to inert stand-ins below). Anything else (os.system, a Lightning or project class) is refused
by name before it is called. omegaconf is not imported, nor needed.

The stand-ins receive omegaconf's pickled state ({_content, _metadata, _parent}; a leaf AnyNode
keeps its value in _val), which plain() turns into dicts, lists and scalars.

Written files hold tensors and plain containers only (hyper_parameters as a plain dict), which
the official code's Lightning load_from_checkpoint and its load_backbone hook accept.
"""
from __future__ import annotations

import collections
import os
import pickle
import typing
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from janus_pretrain.atomic_io import temporary_path

LIGHTNING_VERSION_WRITTEN = "2.5.0.post0"  # the version the official environment pins (janusdna.yml)


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be read or mapped; the message names the file and the key."""


class _OmegaNode:
    """Inert stand-in for an omegaconf object: keeps the pickled state, runs nothing."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


class _DictConfig(_OmegaNode):
    pass


class _ListConfig(_OmegaNode):
    pass


class _AnyNode(_OmegaNode):
    pass


class _Metadata(_OmegaNode):
    pass


class _ContainerMetadata(_OmegaNode):
    pass


# every global of an official checkpoint's pickle that torch's restricted unpickler does not allow
# by itself (the rest, torch storages and _rebuild_tensor_v2, OrderedDict, are torch's own set)
OFFICIAL_GLOBALS = [
    (_DictConfig, "omegaconf.dictconfig.DictConfig"), (_ListConfig, "omegaconf.listconfig.ListConfig"),
    (_AnyNode, "omegaconf.nodes.AnyNode"), (_Metadata, "omegaconf.base.Metadata"),
    (_ContainerMetadata, "omegaconf.base.ContainerMetadata"), (typing.Any, "typing.Any"),
    collections.defaultdict, dict, list, int,
]


def plain(value: Any) -> Any:
    """omegaconf stand-ins -> dicts, lists and scalars; everything else as it is."""
    if isinstance(value, (_DictConfig, _ListConfig)):
        content = value.__dict__.get("_content")
        if content is None:  # a None-valued container
            return None
        if isinstance(content, str):  # an unresolved interpolation or '???'
            return content
        if isinstance(value, _DictConfig):
            return {key: plain(child) for key, child in content.items()}
        return [plain(child) for child in content]
    if isinstance(value, _AnyNode):
        return plain(value.__dict__.get("_val"))
    if isinstance(value, _OmegaNode):
        return None  # metadata objects carry nothing a reader needs
    if isinstance(value, dict):
        return {key: plain(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(child) for child in value)
    return value


@dataclass
class OfficialCheckpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]  # as stored, Lightning prefixes included
    hyper_parameters: dict[str, Any]  # the Hydra config, plain data
    global_step: int | None = None
    epoch: int | None = None
    lightning_version: str | None = None
    optimizer_states: list = field(default_factory=list)  # Lightning's optimizer state_dicts, plain data
    other_keys: list[str] = field(default_factory=list)  # loops, callbacks, ...: read, not used


def _refusal(path: Path, exc: Exception) -> OfficialCheckpointError:
    text = str(exc)
    marker = "GLOBAL "
    if marker in text:  # torch: "Unsupported global: GLOBAL os.system was not an allowed global ..."
        name = text.split(marker, 1)[1].split()[0]
        return OfficialCheckpointError(
            f"{path}: refusing to unpickle: it references {name}, which no official JanusDNA checkpoint "
            f"does (loading could run arbitrary code); this reader allows only the globals of official "
            f"Lightning checkpoints (omegaconf containers, typing.Any, plain containers, torch tensors)")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return OfficialCheckpointError(f"{path}: not a readable Lightning checkpoint ({type(exc).__name__}: {first})")


def read_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """The state_dict and hyper_parameters of an official .ckpt, no code of the file run."""
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: no such file (an official checkpoint is e.g. "
                                      f"outputs/pretrain/hg38/<run>/checkpoints/last.ckpt)")
    if not zipfile.is_zipfile(path):
        raise OfficialCheckpointError(f"{path}: not a torch zip archive (damaged, or not a Lightning checkpoint)")
    try:  # torch.load does not check the members' CRC-32: a flipped byte would load as a wrong weight
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _refusal(path, exc) from None
    if damaged is not None:
        raise OfficialCheckpointError(f"{path}: member {damaged} fails its CRC-32 check: the file was damaged "
                                      f"after it was written; copy or download it again")
    try:
        with torch.serialization.safe_globals(OFFICIAL_GLOBALS):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise _refusal(path, exc) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("state_dict"), dict):
        raise OfficialCheckpointError(f"{path}: no 'state_dict' mapping at the top level: not a Lightning checkpoint")
    state = {k: v for k, v in raw["state_dict"].items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise OfficialCheckpointError(f"{path}: state_dict entry '{bad[0]}' is not a tensor")
    hparams = plain(raw.get("hyper_parameters")) or {}
    if not isinstance(hparams, dict):
        raise OfficialCheckpointError(f"{path}: hyper_parameters is {type(hparams).__name__}, expected a mapping")
    known = {"state_dict", "hyper_parameters", "global_step", "epoch", "pytorch-lightning_version", "optimizer_states"}
    return OfficialCheckpoint(path, state, hparams, raw.get("global_step"), raw.get("epoch"),
                              raw.get("pytorch-lightning_version"), plain(raw.get("optimizer_states") or []),
                              sorted(k for k in raw if k not in known))


def write_official_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], hyper_parameters: dict,
                              global_step: int = 0, epoch: int = 0) -> Path:
    """A Lightning checkpoint the official train.py loads (load_from_checkpoint / pretrained_model_path):
    state_dict (names already official), hyper_parameters as plain data, step counters. Written to a
    temporary name, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"epoch": int(epoch), "global_step": int(global_step),
               "pytorch-lightning_version": LIGHTNING_VERSION_WRITTEN,
               "state_dict": collections.OrderedDict(state_dict), "hparams_name": "config",
               "hyper_parameters": hyper_parameters}
    tmp = temporary_path(path)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
