"""Process-group setup that works the same under every launcher.

Launchers and what they give us:
- `deepspeed --num_accelerators N script.py` (CPU) / `deepspeed --num_gpus N`: RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR/PORT; it does NOT set OMP_NUM_THREADS.
- `torchrun --standalone --nproc_per_node N`: the same variables, OMP_NUM_THREADS=1.
- `srun` (Slurm): SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID; MASTER_ADDR/PORT come from the sbatch
  script. We translate them into the torch variables when those are absent.
- a plain `python launch/pretrain.py`: nothing; we default to a world of one on 127.0.0.1 (without
  these variables DeepSpeed goes looking for mpi4py).

Groups: DeepSpeed's expert-parallel groups (consecutive ranks [0..ep), ...) and, with
parallel.cp_size > 1, the context-parallel groups (consecutive ranks [g cp, (g+1) cp): they share
each sample, one slice each; the data-parallel degree is world / cp). Both tile the same world
independently: an expert-parallel group may hold slices of one sample or of several.

Without CUDA we select DeepSpeed's CPU accelerator and the gloo backend. Every
init_distributed on the CPU accelerator JIT-builds the deepspeed_shm_comm op once; it is cached
under TORCH_EXTENSIONS_DIR (defaulted to the repository's .cache/torch_extensions like the Makefile).
torch's build waits, silently and forever, while the op's lock file exists; a build killed half-way
leaves it behind, so init_distributed waits for it first: saying after a few seconds which file it
waits for and how to clear it, and giving up when a stop signal came (wait_for_build_lock).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, NoReturn

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (single-machine rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_environment() -> dict[str, int]:
    """Fill in the launcher variables that are missing; returns rank, world_size, local_rank.

    Cheap (no process group, no DeepSpeed import), so startup checks can use the world size.
    """
    env = os.environ
    if "RANK" not in env and "SLURM_PROCID" in env:
        env["RANK"] = env["SLURM_PROCID"]
        env["WORLD_SIZE"] = env.get("SLURM_NTASKS", "1")
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        if "LOCAL_WORLD_SIZE" not in env and "SLURM_NTASKS_PER_NODE" in env:
            env["LOCAL_WORLD_SIZE"] = env["SLURM_NTASKS_PER_NODE"].split("(")[0]
    env.setdefault("RANK", "0")
    env.setdefault("WORLD_SIZE", "1")
    env.setdefault("LOCAL_RANK", "0")
    if int(env["WORLD_SIZE"]) == 1:
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(free_port()))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO_ROOT / ".cache" / "torch_extensions"))
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
        # 2 ranks x 2 threads on 2 cores made a step 50x slower: one core's worth of threads per rank
        local_world = int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
        threads = int(env.get("OMP_NUM_THREADS", max(1, (os.cpu_count() or 1) // max(1, local_world))))
        env["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    return {"rank": int(env["RANK"]), "world_size": int(env["WORLD_SIZE"]), "local_rank": int(env["LOCAL_RANK"])}


SHM_OP = "deepspeed_shm_comm"  # the op DeepSpeed's CPU accelerator JIT-builds in init_distributed


class StoppedWaiting(Exception):
    """A stop signal arrived while the run waited for the extension build lock (nothing trained)."""


def build_lock() -> Path:
    """torch's lock file of the shm op build (torch.utils.cpp_extension: <build directory>/lock)."""
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR", REPO_ROOT / ".cache" / "torch_extensions")) / SHM_OP / "lock"


def wait_for_build_lock(stop_requested: Callable[[], bool] = lambda: False, notice_s: float = 5.0,
                        poll_s: float = 0.2) -> None:
    """Return once no build holds the lock; print what is awaited after notice_s; raise
    StoppedWaiting when stop_requested() (a SIGTERM/SIGUSR1 the preemption flag caught)."""
    lock, started, told = build_lock(), time.monotonic(), False
    while lock.exists():
        if stop_requested():
            raise StoppedWaiting(f"stopped while waiting for {lock} (the build lock of DeepSpeed's {SHM_OP} op)")
        if not told and time.monotonic() - started >= notice_s:
            print(f"waiting for {lock}: the lock of torch's build of DeepSpeed's {SHM_OP} op, held by a build on "
                  f"this machine or left by a killed one; if no janus or deepspeed process is building it, delete "
                  f"the file (rm {lock})", file=sys.stderr, flush=True)
            told = True
        time.sleep(poll_s)


@dataclass
class DistContext:
    rank: int  # global rank
    world_size: int  # all ranks
    local_rank: int  # rank on this node (GPU index)
    device: torch.device  # cuda:<local_rank> or cpu
    ep_size: int  # expert-parallel group size
    ep_rank: int  # rank inside the expert-parallel group: owns experts [ep_rank*E/ep, (ep_rank+1)*E/ep)
    edp_rank: int  # rank inside the expert-data-parallel group (replicas of the same experts)
    ep_group: object = None  # ProcessGroup the experts are sharded over (None when ep_size == 1)
    ep_group_name: str = "ep_size_1"  # DeepSpeed's name of the expert groups (p.group_name)
    cp_size: int = 1  # context-parallel group size: consecutive ranks [g cp, (g+1) cp) share each sample
    cp_group: object = None  # ProcessGroup of this rank's context-parallel group (None when cp_size == 1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def data_rank(self) -> int:
        """The data stream this rank reads: every rank of a context-parallel group reads the same."""
        return self.rank // self.cp_size

    @property
    def data_ranks(self) -> int:
        """Data-parallel degree (world / cp_size)."""
        return self.world_size // self.cp_size


def context_parallel_group(cp_size: int):
    """This rank's context-parallel group (consecutive ranks), None when cp_size is 1. Every rank
    creates every group, in the same order (torch.distributed.new_group is collective)."""
    import torch.distributed as dist

    if cp_size == 1:
        return None
    world, rank = dist.get_world_size(), dist.get_rank()
    mine = None
    for first in range(0, world, cp_size):
        group = dist.new_group(list(range(first, first + cp_size)))
        if first <= rank < first + cp_size:
            mine = group
    return mine


def init_distributed(ep_size: int, timeout_minutes: int = 30,
                     stop_requested: Callable[[], bool] = lambda: False, cp_size: int = 1) -> DistContext:
    """Start the process group (gloo on CPU, nccl on GPU), DeepSpeed's expert groups and the
    context-parallel groups.
    stop_requested: polled while waiting for the shm op's build lock (StoppedWaiting when true)."""
    import deepspeed
    import deepspeed.comm as ds_comm
    from deepspeed.utils import groups

    ranks = prepare_environment()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(ranks["local_rank"])
    else:
        wait_for_build_lock(stop_requested)
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    # DeepSpeed's own MoE layer creates these groups in set_deepspeed_parallelism; our MoE is not
    # a deepspeed.moe.layer.MoE, so we create them here: expert-parallel groups are consecutive
    # ranks [0..ep), [ep..2ep), ...; expert-data-parallel groups are the strided ranks holding the
    # same experts. ZeRO reduces expert gradients over the latter.
    name = f"ep_size_{ep_size}"
    groups._create_expert_and_data_parallel(ep_size)
    ep_group = groups._get_expert_parallel_group(name) if ep_size > 1 else None
    return DistContext(rank=ds_comm.get_rank(), world_size=ds_comm.get_world_size(), local_rank=ranks["local_rank"],
                       device=torch.device("cuda", ranks["local_rank"]) if cuda else torch.device("cpu"),
                       ep_size=ep_size, ep_rank=groups._get_expert_parallel_rank(name),
                       edp_rank=groups._get_expert_data_parallel_rank(name), ep_group=ep_group, ep_group_name=name,
                       cp_size=cp_size, cp_group=context_parallel_group(cp_size))


def shutdown(barrier: bool = True) -> None:
    """Destroy the process group (a ZeRO-3 run aborted at exit without it).

    barrier=False when this rank leaves on its own (an unexpected error): the others may never
    reach a barrier."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if barrier:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def exit_after(run: Callable[[], int]) -> NoReturn:
    """Run a training process's work and end the process with its exit code (1 and the traceback
    for an unexpected error) without Python's interpreter finalization.

    Why: gloo's worker threads outlive destroy_process_group. A worker that finishes a collective
    frees the work's tensors, which needs the GIL; if the main thread has already reached
    finalization by then (a loaded machine deschedules the worker between the two), the thread
    is unwound through C++ code that cannot be unwound and the rank dies with SIGABRT ("terminate
    called without an active exception", exit -6) instead of its code: found as a flaky 2-rank test
    and confirmed from a core dump (AsyncAllgatherWork destructor -> take_gil -> pthread_exit).
    Everything the run writes is closed by then (the trainer closes its logging backends, the
    checkpoints are fsynced), so leaving with os._exit after flushing loses nothing.
    Not for use inside a process that must go on (tests in-process, notebooks): call the work directly.
    """
    try:
        code = run()
    except Exception:  # noqa: BLE001 - reported exactly as Python would, then the same exit code
        traceback.print_exc()
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
