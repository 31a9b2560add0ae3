"""DeepSpeed ZeRO-2 (+ expert parallelism) checkpoint -> fp32 named weights -> export directory.

DeepSpeed's own zero_to_fp32 fails on MoE checkpoints, so the fp32 master weights are rebuilt
here from the files documented in janus_pretrain/checkpoint/layout.py:

  rank_<R>.pt 'zero_layout'  per optimizer param group of rank R: kind (dense | moe), the
                             ordered [name, shape] list, partition_id / partition_count in the
                             group's reduce group (data-parallel world for dense, the
                             expert-data-parallel group of R's ep_rank for moe)
  <R's zero file>            'single_partition_of_fp32_groups': R's fp32 partition of each group
                             with DeepSpeed's tail padding already stripped;
                             'param_alignment_paddings': zeros DeepSpeed put after each param

A group's flat fp32 vector is the concatenation of the partitions of partition ids
0..count-1 of ONE reduce group (dense: any data-parallel replica set, they are identical; moe:
the ranks of one ep_rank, each ep_rank holding different global expert ids). It is cut into
parameters in layout order, skipping each parameter's alignment padding. The rebuilt weights are
then checked against the training-dtype copies DeepSpeed and the trainer saved
(mp_rank_00_model_states.pt 'module', experts_ep<E>.pt): master.to(training dtype) must equal
them exactly, else the mapping is wrong and nothing is written.

ZeRO stage 0 checkpoints have no partitions: weights come from 'module' + the expert files, in the
training dtype (exported as fp32 and labelled so).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from janus_pretrain import deepspeed_internals as ds
from janus_pretrain.checkpoint.integrity import IntegrityError, check_pickle_safe, verify_digests
from janus_pretrain.checkpoint.layout import (EXPERTS_GLOB, META, MODEL_STATES, CheckpointDir, CheckpointError,
                                              rank_file)
from janus_pretrain.checkpoint.meta import MetaError, read_meta
from janus_pretrain.checkpoint.reshard import check_zero_file
from janus_pretrain.cli import bar_disable
from janus_pretrain.model_config import ModelConfig, architecture_differences, describe_differences
from janus_pretrain.export import check_state_matches, expected_shapes, write_export
from janus_pretrain.tokenizer import TOKENIZER_VERSION


class ConvertError(CheckpointError):
    """A checkpoint that cannot be converted; the message names the file and what is wrong."""


@dataclass
class Converted:
    state: dict[str, torch.Tensor]  # name -> fp32 tensor, every expert
    model_config: ModelConfig
    run: dict[str, Any]  # summary for config.json / the model card
    precision_note: str  # which weights were exported, in words
    checks: list[str] = field(default_factory=list)  # what was verified


def resolve_tag(run_dir: Path, tag: str = "latest") -> Path:
    """The tag directory of `run_dir` (a checkpoint.dir, or a run dir holding checkpoints/);
    'latest' means what a resume would pick (the pointer, else the newest complete tag)."""
    try:
        return CheckpointDir.find(run_dir).resolve(tag)
    except CheckpointError as exc:
        raise ConvertError(str(exc)) from None


def _load(path: Path, trust: bool = False, read=None) -> dict:
    """A checkpoint file (every one holds a mapping), after the pickle scan (checkpoint/integrity.py): DeepSpeed's files need
    full pickle, but only for the few classes on ALLOWED_GLOBALS; anything else is refused
    before a byte is unpickled, unless the caller trusts the checkpoint's author (--trust-checkpoint).
    read(path): how to load it (default torch.load, full pickle, on the CPU)."""
    if not path.is_file():
        raise ConvertError(f"checkpoint file missing: {path}")
    try:
        check_pickle_safe(path, trust=trust)
        loaded = read(path) if read else torch.load(path, map_location="cpu", weights_only=False)
    except IntegrityError as exc:
        raise ConvertError(str(exc)) from None
    except Exception as exc:  # a damaged archive that passed no digest check (--no-verify)
        raise ConvertError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0]}); the file is "
                           f"damaged: convert another tag") from None
    if not isinstance(loaded, dict):
        raise ConvertError(f"{path}: holds a {type(loaded).__name__}, not the mapping such a file holds; it was "
                           f"damaged or replaced: convert another tag")
    return loaded


def _split_flat(flat: torch.Tensor, params: list, paddings: list[int], where: str) -> dict[str, torch.Tensor]:
    needed = sum(int(torch.Size(shape).numel()) for _, shape in params) + sum(paddings)
    if flat.numel() != needed:
        raise ConvertError(f"{where}: flat fp32 group has {flat.numel()} values, the layout needs {needed}; "
                           f"the partitions do not belong to this layout")
    out, offset = {}, 0
    for (name, shape), pad in zip(params, paddings):
        numel = int(torch.Size(shape).numel())
        out[name] = flat[offset:offset + numel].view(shape).clone()
        offset += numel + pad
    return out


def _zero2_weights(folder: Path, ranks: dict[int, dict], checks: list[str], trust: bool,
                   progress: bool | None = None) -> dict[str, torch.Tensor]:
    """Reassemble every optimizer param group from the per-rank fp32 partitions."""
    partitions: dict[tuple, dict[int, torch.Tensor]] = {}  # (group index, kind, ep_rank) -> {partition_id: flat}
    layouts: dict[tuple, dict] = {}
    for rank, info in tqdm(sorted(ranks.items()), desc="reading ZeRO partitions", unit="rank",
                           disable=bar_disable(progress)):
        flats = ds.saved_fp32_partitions(_load(folder / info["zero_file"], trust, ds.load_zero_file))
        if len(flats) != len(info["zero_layout"]):
            raise ConvertError(f"{folder / info['zero_file']}: {len(flats)} param groups, rank_{rank}.pt describes "
                               f"{len(info['zero_layout'])}")
        for i, group in enumerate(info["zero_layout"]):
            key = (i, group["kind"], info["ep_rank"] if group["kind"] == "moe" else None)
            if key in layouts and layouts[key]["params"] != group["params"]:
                raise ConvertError(f"rank {rank}: param group {group['name']} lists other parameters than another "
                                   f"rank of the same reduce group")
            layouts.setdefault(key, group)
            if flats[i].dtype != torch.float32:
                raise ConvertError(f"{folder / info['zero_file']}: group {i} master partition is {flats[i].dtype}, "
                                   f"expected fp32")
            seen = partitions.setdefault(key, {})
            pid = group["partition_id"]
            if pid in seen:  # another replica of a dense group: must hold the same values
                if not torch.equal(seen[pid], flats[i]):
                    raise ConvertError(f"rank {rank}: dense group {group['name']} partition {pid} differs between "
                                       f"data-parallel replicas")
                continue
            seen[pid] = flats[i]
    state: dict[str, torch.Tensor] = {}
    for key, group in layouts.items():
        got = partitions[key]
        missing = sorted(set(range(group["partition_count"])) - set(got))
        if missing:
            raise ConvertError(f"{folder}: param group {group['name']} ({group['kind']}) lacks partitions {missing} "
                               f"of {group['partition_count']}: rank files missing")
        flat = torch.cat([got[p] for p in range(group["partition_count"])])
        where = f"{folder}: group {group['name']}" + (f" ep_rank {key[2]}" if key[2] is not None else "")
        for name, tensor in _split_flat(flat, group["params"], group["param_paddings"], where).items():
            if name in state:
                raise ConvertError(f"{where}: parameter {name} appears in two param groups")
            state[name] = tensor
    checks.append(f"{len(layouts)} reduce-group param groups reassembled from {len(ranks)} ranks' fp32 partitions")
    return state


def _training_copies(folder: Path, model_states: dict, trust: bool) -> dict[str, torch.Tensor]:
    """Training-dtype weights saved beside the optimizer state: DeepSpeed's 'module' (rank 0)
    overlaid with every expert file (experts of all ep ranks)."""
    copies = dict(model_states[ds.MODULE])
    for path in sorted(folder.glob(EXPERTS_GLOB)):
        copies.update(_load(path, trust))
    return copies


def convert_checkpoint(run_dir: str | Path, tag: str = "latest", expect_model: ModelConfig | None = None,
                       verify: bool = True, trust: bool = False, progress: bool | None = None) -> Converted:
    """verify: compare every file with the sha256 its meta.json records; trust: skip the pickle
    scan (only for checkpoints from an author you trust)."""
    folder = resolve_tag(Path(run_dir), tag)
    meta_path = folder / META
    try:
        meta = read_meta(folder)
    except MetaError as exc:
        raise ConvertError(f"{exc}; convert another tag") from None
    checks: list[str] = []
    if verify and meta.files is not None:
        try:
            verify_digests(folder, meta.files)
        except IntegrityError as exc:
            raise ConvertError(f"{exc}; convert another tag") from None
        checks.append(f"{len(meta.files)} files match the sha256 digests recorded at save")
    elif verify:
        checks.append("no digests recorded (checkpoint written before they existed): files not verified")
    if meta.tokenizer_version != TOKENIZER_VERSION:
        raise ConvertError(f"{meta_path}: tokenizer_version {meta.tokenizer_version!r} differs from this "
                           f"package's {TOKENIZER_VERSION!r}")
    try:
        model_config = meta.model_config(str(meta_path))
    except MetaError as exc:
        raise ConvertError(str(exc)) from None
    if model_config.kernels == "cuda":  # forced for training; the export must also load on CPU
        model_config = replace(model_config, kernels="auto")
    if expect_model is not None:
        diff = architecture_differences(model_config, expect_model)
        if diff:
            raise ConvertError(f"{folder}: the checkpoint (there) holds another model than --config (here): "
                               f"{describe_differences(diff)}")
    world = meta.layout.world_size
    ranks = {}
    for rank in range(world):
        info = _load(folder / rank_file(rank), trust)
        try:  # the ZeRO file read below is the one DeepSpeed names for this rank, never a recorded name
            check_zero_file(folder, rank, info, meta)
        except IntegrityError as exc:
            raise ConvertError(f"{exc}; convert another tag") from None
        ranks[rank] = {k: info.get(k) for k in ("ep_rank", "edp_rank", "zero_file", "zero_layout")}
    model_states = _load(folder / MODEL_STATES, trust)
    if ds.saved_round_robin(model_states):
        raise ConvertError(f"{folder}: round_robin_gradients reorders ZeRO's flat groups; not supported")
    copies = _training_copies(folder, model_states, trust)
    train_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[meta.precision]
    if meta.layout.zero_stage > 0 and all(r["zero_layout"] for r in ranks.values()):
        state = _zero2_weights(folder, ranks, checks, trust, progress)
        note = "fp32 master weights (ZeRO optimizer partitions)"
    else:
        state = {k: v for k, v in copies.items()}
        note = f"training weights in {str(train_dtype).replace('torch.', '')} (ZeRO stage 0: no fp32 master copy)"
    expected = expected_shapes(model_config)
    for name in expected:  # tensors the optimizer does not hold (buffers, frozen params): from 'module'
        if name not in state and name in copies and ".experts." not in name:
            state[name] = copies[name]
    state = {k: v.float() for k, v in state.items()}
    check_state_matches(state, model_config)
    mismatched = [k for k, v in copies.items() if k in state and not torch.equal(state[k].to(v.dtype), v)]
    if mismatched:
        raise ConvertError(f"{folder}: rebuilt weights disagree with the saved training weights for {len(mismatched)} "
                           f"tensors, e.g. {mismatched[:3]}; the partition layout was misread, nothing written")
    checks.append(f"all {len(copies)} saved training-dtype tensors ({str(train_dtype).replace('torch.', '')}) equal "
                  f"the rebuilt weights cast to that dtype")
    config = meta.config
    run = {"checkpoint": str(folder.parent), "tag": folder.name, "step": meta.progress.step,
           "tokens_seen": meta.progress.tokens_seen, "ep_size": meta.layout.ep_size, "dp_world_size": world,
           "zero_stage": meta.layout.zero_stage, "train_precision": meta.precision,
           "weights_source": note, "config_source": config.get("source", ""),
           "train_config": {k: config.get(k) for k in ("train", "optimizer", "schedule", "parallel")},
           "data": data_summary(meta.section("data"))}
    return Converted(state, model_config, run, note, checks)


def data_summary(data: dict) -> dict:
    """The run's data section plus per-species sample counts from its manifest, when readable."""
    summary = {k: data.get(k) for k in ("manifest", "seq_len", "mixture", "rc_augment", "max_n_frac") if k in data}
    manifest = Path(data.get("manifest") or "")
    if manifest.is_file():
        try:
            raw = json.loads(manifest.read_text())
            summary["tokenizer_version"] = raw.get("tokenizer_version")
            summary["window_bp"] = raw.get("window_bp")
            summary["species"] = {name: {split: sum(s.get("samples", 0) for s in part.get("shards", []))
                                         for split, part in info.get("splits", {}).items()}
                                  for name, info in raw.get("species", {}).items()}
        except (ValueError, AttributeError, TypeError):
            summary["manifest_note"] = "manifest present but not in the expected format"
    return summary


def convert_to_export(run_dir: str | Path, out_dir: str | Path, tag: str = "latest",
                      expect_model: ModelConfig | None = None, overwrite: bool = False, verify: bool = True,
                      trust: bool = False, progress: bool | None = None) -> Converted:
    if Path(out_dir).exists() and not overwrite:  # before reading gigabytes of optimizer state
        raise ConvertError(f"output directory {out_dir} already exists; pass --overwrite to replace it")
    converted = convert_checkpoint(run_dir, tag, expect_model, verify=verify, trust=trust, progress=progress)
    write_export(converted.state, converted.model_config, out_dir, converted.run, overwrite,
                 weights_dtype="float32")
    return converted
