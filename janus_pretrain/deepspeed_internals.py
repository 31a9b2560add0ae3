"""Every DeepSpeed internal the package relies on (and torch's LambdaLR._last_lr), in this one module.

Checked against deepspeed 0.19.8 with torch 2.13 (what `make setup` installs; setup.cfg allows
deepspeed>=0.16). tests/test_deepspeed_internals.py fails with one line naming the attribute
when an upgrade moves one of them, and Trainer checks the live engine at start
(check_engine), so a run stops before its first step, not at its first checkpoint.

Used through DeepSpeed's public API, not from here: deepspeed.initialize; the engine's
backward/step/save_checkpoint/load_checkpoint (with custom_load_fn), get_lr,
get_global_grad_norm, module, optimizer, lr_scheduler; deepspeed.moe.utils (is_moe_param, the
MoE parameter groups); deepspeed.checkpoint.constants (the keys of DeepSpeed's own files, which
its zero_to_fp32 reads too: used below for reading them).

Internals, and why no public API covers them:
  - the ZeRO-1/2 flat-group layout (bit16_groups, partition_count, groups_padding,
    round_robin_bit16_padding, real_dp_process_group, single_partition_of_fp32_groups): recorded
    at every save in rank_<R>.pt (zero_layout) because the converter and the resharder read a
    checkpoint without an engine of the layout that wrote it. DeepSpeed's own offline readers
    (zero_to_fp32, universal checkpoints) do not handle our expert parallelism: our experts sit in
    their own MoE parameter groups over expert-data-parallel groups and in our experts_ep<E>.pt files.
  - resharding MoE + ZeRO-2 onto another world size, ep_size or stage (round_robin_bit16_groups,
    partition_size, parallel_partitioned_bit16_groups; engine.global_steps/global_samples/
    skipped_steps): DeepSpeed's load_checkpoint loads ZeRO partitions only onto the data-parallel
    size that wrote them, and loading a universal checkpoint does not know our MoE groups, so a
    rank fills its flat partitions itself and sets the counters load_checkpoint would have set.
    (deepspeed.utils.safe_set_local_fp32_param and safe_set_local_optimizer_state set the same
    partitions one parameter at a time through DeepSpeed's fragment mapping: public, but not yet
    tried against the expert groups here; the resharding tests would say whether it is equivalent.)
  - the names of the files engine.load_checkpoint unpickles (engine._get_all_ckpt_names,
    _get_zero_ckpt_name, _get_rank_zero_ckpt_name, _get_optimizer_ckpt_name, zero_elastic_checkpoint,
    checkpoint_mp_rank): a resume scans exactly those files for pickle payloads before DeepSpeed
    opens them (load_checkpoint_reads), so no name recorded in a checkpoint decides what is
    scanned; the converter and the resharder name a rank's ZeRO file with the same function
    (zero_file_of_rank). There is no public accessor for any of them.
  - torch's LambdaLR._last_lr: a resume that changes the peak lr must report the new lr before its
    first step (get_last_lr reads _last_lr; torch has no setter).
  - MoE registration: DeepSpeedEngine treats a model as MoE only when it finds a
    deepspeed.moe.layer.MoE module, and then reads its num_local_experts, expert_group_name and
    calls set_deepspeed_parallelism. Our MoE is our own (dropless, sort-based dispatch), so
    attach_moe_markers registers a parameter-less MoE subclass per layer (details below).
"""
from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path

import torch

CHECKED_VERSION = "0.19.8"
CHECKED_TORCH = "2.13"

# (class, attribute, how): 'attribute' = the class has it, or its source assigns self.<attribute>;
# 'read' = DeepSpeedEngine's source reads module.<attribute> from MoE modules
INTERNALS = (
    *(("deepspeed.runtime.zero.stage_1_and_2.DeepSpeedZeroOptimizer", name, "attribute") for name in (
        "bit16_groups", "round_robin_bit16_groups", "round_robin_bit16_padding", "round_robin_gradients",
        "partition_count", "partition_size", "groups_padding", "real_dp_process_group",
        "single_partition_of_fp32_groups", "parallel_partitioned_bit16_groups", "optimizer")),
    *(("deepspeed.runtime.engine.DeepSpeedEngine", name, "attribute") for name in (
        "_get_zero_ckpt_name", "_get_rank_zero_ckpt_name", "_get_zero_ckpt_prefix", "_get_all_ckpt_names",
        "_get_optimizer_ckpt_name", "zero_elastic_checkpoint", "checkpoint_mp_rank", "has_moe_layers",
        "global_steps", "global_samples", "skipped_steps")),
    *(("torch.optim.lr_scheduler.LRScheduler", name, "attribute") for name in ("_last_lr", "base_lrs", "last_epoch")),
    ("torch.optim.lr_scheduler.LambdaLR", "lr_lambdas", "attribute"),
    *(("deepspeed.runtime.engine.DeepSpeedEngine", name, "read") for name in (
        "num_local_experts", "expert_group_name", "set_deepspeed_parallelism")),
)
ZERO_OPTIMIZER_ATTRIBUTES = tuple(name for cls, name, how in INTERNALS if cls.endswith("DeepSpeedZeroOptimizer"))

# keys of DeepSpeed's model-states file (mp_rank_00_model_states.pt) beyond deepspeed.checkpoint.constants
MODULE, LR_SCHEDULER, DS_CONFIG = "module", "lr_scheduler", "ds_config"
ENGINE_COUNTERS = ("global_steps", "global_samples", "skipped_steps")


def _class(path: str):
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def missing_internals() -> list[str]:
    """One line per internal the installed DeepSpeed/torch no longer has (empty: all present)."""
    import importlib

    lines = []
    for path, name, how in INTERNALS:
        cls = _class(path)
        source = inspect.getsource(cls)
        assigned = re.search(rf"self\.{name}\s*(:[^=\n]*)?=(?!=)", source)  # self.x = ... or self.x: T = ...
        found = (hasattr(cls, name) or bool(assigned)) if how == "attribute" else f".{name}" in source
        if not found:
            package = path.split(".")[0]
            version = importlib.import_module(package).__version__
            what = f"{path}.{name}" if how == "attribute" else f"{path} reading module.{name}"
            lines.append(f"{package} {version}: {what} is gone; janus_pretrain/deepspeed_internals.py was checked "
                         f"against deepspeed {CHECKED_VERSION} and torch {CHECKED_TORCH}: adapt it there")
    return lines


def check_engine(engine) -> None:
    """Raise, naming the attribute, when a live ZeRO-1/2 engine lacks an internal the checkpoints use."""
    optimizer = engine.optimizer
    if not is_zero(optimizer):
        return
    for name in (*ZERO_OPTIMIZER_ATTRIBUTES, "_get_zero_ckpt_name"):
        if not hasattr(optimizer if name != "_get_zero_ckpt_name" else engine, name):
            import deepspeed

            raise RuntimeError(f"deepspeed {deepspeed.__version__}: the ZeRO optimizer has no '{name}'; "
                               f"janus_pretrain/deepspeed_internals.py was checked against deepspeed "
                               f"{CHECKED_VERSION}: install that version or adapt the module")


# ---- the live ZeRO-1/2 optimizer ----

def is_zero(optimizer) -> bool:
    """A ZeRO-1/2 optimizer (ZeRO-0 hands back the plain torch optimizer)."""
    return hasattr(optimizer, "bit16_groups")


def inner_optimizer(optimizer):
    """The torch optimizer DeepSpeed wraps (the optimizer itself under ZeRO-0)."""
    return getattr(optimizer, "optimizer", optimizer)


def fp32_partitions(optimizer) -> list[torch.Tensor]:
    """This rank's fp32 master partition of each group (empty under ZeRO-0)."""
    return list(getattr(optimizer, "single_partition_of_fp32_groups", []) or [])


def zero_layout(engine, module: torch.nn.Module) -> list[dict]:
    """Per optimizer param group: how ZeRO-1/2 flattened and partitioned it on this rank
    (checkpoint/layout.py documents the keys; empty under ZeRO-0, whose weights are in 'module')."""
    optimizer = engine.optimizer
    if not is_zero(optimizer):
        return []
    names = {id(p): n for n, p in module.named_parameters()}
    layout = []
    for i, params in enumerate(optimizer.bit16_groups):
        group = optimizer.optimizer.param_groups[i]
        layout.append({
            "name": group.get("name", str(i)),
            "kind": "moe" if group.get("moe", False) else "dense",
            "decay_kind": group.get("decay_kind", ""),
            "params": [[names[id(p)], list(p.shape)] for p in params],
            "partition_id": torch.distributed.get_rank(group=optimizer.real_dp_process_group[i]),
            "partition_count": int(optimizer.partition_count[i]),
            "partition_numel": int(optimizer.single_partition_of_fp32_groups[i].numel()),
            "padding": int(optimizer.groups_padding[i]),
            "param_paddings": [int(x) for x in optimizer.round_robin_bit16_padding[i]],
        })
    return layout


def zero_file_name(engine, root: Path, tag: str) -> str:
    """The name of the ZeRO partition file this rank writes into root/tag."""
    return Path(engine._get_zero_ckpt_name(str(root), tag)).name


@functools.lru_cache(maxsize=1)
def _file_names():
    """DeepSpeedEngine's own ZeRO file naming, usable without an engine (it reads no engine state)."""
    from deepspeed.runtime.engine import DeepSpeedEngine

    class FileNames:
        _get_zero_ckpt_prefix = DeepSpeedEngine._get_zero_ckpt_prefix
        _get_rank_zero_ckpt_name = DeepSpeedEngine._get_rank_zero_ckpt_name
    return FileNames()


def zero_file_of_rank(rank: int, bf16: bool) -> str:
    """The ZeRO partition file DeepSpeed writes and reads for data-parallel rank `rank` of a
    checkpoint (our runs have no model or pipeline parallelism: mp rank 0, dp rank = rank)."""
    return Path(_file_names()._get_rank_zero_ckpt_name("", "", 0, rank, bf16)).name


def load_checkpoint_reads(engine, root: Path, tag: str) -> list[str]:
    """The names of the files in root/tag that engine.load_checkpoint(root, tag) unpickles on this
    rank, as DeepSpeed derives them: every model-states file its glob finds (it loads and may merge
    them), this rank's ZeRO partition (every rank's with zero elastic checkpoints), with the older
    name DeepSpeed falls back to when that one is absent, and the optimizer file of a ZeRO-0 MoE
    run. DeepSpeed's own per-expert files are not read: our MoE markers declare no local experts."""
    names = {engine._get_ckpt_name(str(root), tag)} | set(engine._get_all_ckpt_names(str(root), tag))
    if engine.zero_optimization():
        if engine.zero_elastic_checkpoint():
            group = engine.optimizer.dp_process_group
            names |= {engine._get_rank_zero_ckpt_name(str(root), tag, engine.checkpoint_mp_rank, r,
                                                      engine.bfloat16_enabled())
                      for r in range(torch.distributed.get_world_size(group=group))}
        else:
            names.add(engine._get_zero_ckpt_name(str(root), tag))
        older = {n.replace("_optim_states.pt", "optim_states.pt") for n in names if n.endswith("_optim_states.pt")}
        names |= {n for n in older if Path(n).exists()}
    elif engine.has_moe_layers and engine.optimizer is not None:
        from deepspeed.utils import groups

        expp_rank = groups._get_expert_parallel_rank(groups._get_max_expert_size_name())
        names.add(engine._get_optimizer_ckpt_name(str(root), tag, expp_rank))
    return sorted(Path(n).name for n in names)


def uses_round_robin(optimizer) -> bool:
    return bool(getattr(optimizer, "round_robin_gradients", False))


def local_partitions(optimizer):
    """Per group of this rank: (index, params in flat order, their alignment paddings, partition id,
    partition size, fp32 master partition, this rank's training-dtype partition)."""
    for i, params in enumerate(optimizer.round_robin_bit16_groups):
        pid = torch.distributed.get_rank(group=optimizer.real_dp_process_group[i])
        yield (i, params, [int(p) for p in optimizer.round_robin_bit16_padding[i]], pid,
               int(optimizer.partition_size[i]), optimizer.single_partition_of_fp32_groups[i],
               optimizer.parallel_partitioned_bit16_groups[i][pid])


def set_engine_counters(engine, model_states: dict) -> None:
    """What engine.load_checkpoint sets from DeepSpeed's model states, when we loaded the rest ourselves."""
    for name in ENGINE_COUNTERS:
        setattr(engine, name, model_states[name])


def skipped_steps(engine) -> int:
    """Optimizer steps DeepSpeed skipped (NaN/inf gradients) so far."""
    return engine.skipped_steps


def set_peak_lr(scheduler, peak_lr: float) -> list[float]:
    """Give a resumed LambdaLR another peak lr at its current step; returns the lr of each group."""
    scheduler.base_lrs = [peak_lr for _ in scheduler.base_lrs]
    lrs = [base * factor(scheduler.last_epoch) for factor, base in zip(scheduler.lr_lambdas, scheduler.base_lrs)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)
    return lrs


# ---- DeepSpeed's files (keys from deepspeed.checkpoint.constants) ----

def load_zero_file(path: Path, mmap: bool = False) -> dict:
    """The optimizer state of one ZeRO partition file (after the caller's pickle scan)."""
    from deepspeed.checkpoint.constants import OPTIMIZER_STATE_DICT

    return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)[OPTIMIZER_STATE_DICT]


def saved_fp32_partitions(state: dict) -> list[torch.Tensor]:
    """Each group's fp32 master partition, tail padding already stripped by DeepSpeed."""
    from deepspeed.checkpoint.constants import SINGLE_PARTITION_OF_FP32_GROUPS

    return [t.detach() for t in state[SINGLE_PARTITION_OF_FP32_GROUPS]]  # saved as leaves needing grad


def saved_moments(state: dict, index: int) -> dict:
    """torch AdamW's per-parameter state of group `index` (exp_avg, exp_avg_sq, step)."""
    from deepspeed.checkpoint.constants import BASE_OPTIMIZER_STATE

    base = state[BASE_OPTIMIZER_STATE]
    return base["state"].get(index, {}) if isinstance(base, dict) else base[index]


def saved_round_robin(model_states: dict) -> bool:
    return bool((model_states.get(DS_CONFIG) or {}).get("zero_optimization", {}).get("round_robin_gradients"))


# ---- MoE registration (DeepSpeedEngine finds MoE layers by isinstance) ----
# The flag DeepSpeedEngine sets when it finds a deepspeed.moe.layer.MoE makes ZeRO-1/2 reduce and
# partition expert parameters over their expert-data-parallel group instead of the whole world, and
# average the expert part of the gradient norm correctly. Our markers hold no parameters or buffers
# (state_dict keys are unchanged) and declare zero local experts, so DeepSpeed's own per-expert
# checkpoint files are empty on save and skipped on load: checkpoint/training_state.py writes and
# restores every expert-parallel rank's experts (experts_ep<E>.pt). Gradient scaling needs no fix:
# ZeRO divides every gradient by the data-parallel world size and sums expert gradients over the
# expert-data-parallel group; an expert's local gradient already sums the tokens of every rank of
# its expert-parallel group (the backward all-to-all brings them back), so the result is the gradient
# of the mean over all ranks' losses, as for dense parameters (tests/test_engine_parallel.py).

MARKER_ATTRIBUTE = "deepspeed_moe_markers"


@functools.lru_cache(maxsize=1)
def _marker_class():
    from deepspeed.moe.layer import MoE
    from torch import nn

    class DeepSpeedMoEMarker(MoE):
        """Parameter-less stand-in that DeepSpeed's isinstance(module, MoE) scans find."""

        def __init__(self, layer_name: str, num_experts: int, ep_size: int, group_name: str):
            nn.Module.__init__(self)  # deliberately not MoE.__init__: it would build DeepSpeed's experts
            self.layer_name = layer_name
            self.num_experts = num_experts
            self.ep_size = ep_size
            self.expert_group_name = group_name
            self.num_local_experts = 0  # our checkpoint code saves the experts, not DeepSpeed's

        def set_deepspeed_parallelism(self, use_data_before_expert_parallel_: bool = False) -> None:
            """DeepSpeed calls this on every MoE; our groups already exist (engine/distributed.py)."""

        def forward(self, *args, **kwargs):
            raise RuntimeError("DeepSpeedMoEMarker is a marker for DeepSpeed, not a layer to run")
    return DeepSpeedMoEMarker


def attach_moe_markers(model: torch.nn.Module, ep_size: int, group_name: str) -> int:
    """Register one marker per MoE layer of `model` (model.moe_layers()); returns their count."""
    from torch import nn

    layers = model.moe_layers() if hasattr(model, "moe_layers") else []
    if not layers:
        return 0
    marker = _marker_class()
    markers = nn.ModuleList(marker(getattr(layer, "layer_name", f"moe{i}"), layer.num_experts, ep_size, group_name)
                            for i, layer in enumerate(layers))
    model.add_module(MARKER_ATTRIBUTE, markers)
    return len(markers)


def expert_param_names(module: torch.nn.Module) -> list[str]:
    """Names of the parameters DeepSpeed treats as expert parameters."""
    from deepspeed.moe.utils import is_moe_param

    return [name for name, p in module.named_parameters() if is_moe_param(p)]
