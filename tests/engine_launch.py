"""Start N ranks of tests/engine_worker.py the way srun does: one process per rank with RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT set (no torchrun, so exit codes such as 75 reach us).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from janus_pretrain.engine.distributed import free_port

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "engine_worker.py"

# a small Janus model that has everything: Mamba, attention, MoE on odd layers, fusion
SMALL_MODEL = {"d_model": 16, "n_layers": 2, "attn_layer_period": 2, "attn_layer_offset": 0,
               "expert_layer_period": 2, "expert_layer_offset": 1, "num_experts": 4, "top_k": 2,
               "intermediate_size": 32, "n_heads": 2, "d_state": 4, "d_conv": 4, "expand": 2,
               "kernels": "reference", "scan_chunk": 16}


def small_config(run: Path, **sections) -> dict:
    """A run config dict for tests: tiny model, fp32, ZeRO-2, checkpoints under `run`."""
    config = {
        "model": dict(SMALL_MODEL),
        "data": {"seq_len": 64},
        "train": {"micro_batch": 2, "steps": 4, "precision": "fp32", "grad_clip": 1.0, "seed": 3},
        "optimizer": {"lr": 3.0e-3},
        "parallel": {"zero_stage": 2, "ep_size": 1},
        "checkpoint": {"dir": str(run / "checkpoints"), "every": 0, "keep": 2},
        "logging": {"dir": str(run / "tensorboard"), "every": 1},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    return copy.deepcopy(config)


def _rank_env(rank: int, nprocs: int, port: str) -> dict[str, str]:
    """What a launcher gives one rank: torch's rank variables, rendezvous, one thread."""
    env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(nprocs), "LOCAL_RANK": str(rank),
           "LOCAL_WORLD_SIZE": str(nprocs), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    return env


def start(nprocs: int, spec: dict, out: Path) -> list[subprocess.Popen]:
    out.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "out": str(out)}
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec))
    port = str(free_port())
    procs = []
    for rank in range(nprocs):
        env = _rank_env(rank, nprocs, port)
        log = open(out / f"log_rank{rank}.txt", "w")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(spec_path)], env=env, cwd=out,
                                      stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait(procs: list[subprocess.Popen], out: Path, timeout: float = 300) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError(f"ranks did not finish in {timeout} s; logs in {out}:\n{logs(out)}")
    return codes


def logs(out: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(out.glob("log_rank*.txt")))


def run(nprocs: int, spec: dict, out: Path, timeout: float = 300) -> list[int]:
    return wait(start(nprocs, spec, out), out, timeout)


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def merged_weights(out: Path, nprocs: int, step: int | None = None):
    """Full named fp32 weights (at the end, or after `step` with weights_every_step): dense from
    rank 0, every expert from the rank that holds it."""
    import torch

    merged = {}
    for rank in range(nprocs):
        name = f"weights_rank{rank}.pt" if step is None else f"weights_step{step}_rank{rank}.pt"
        for name, value in torch.load(out / name, weights_only=True).items():
            merged.setdefault(name, value)
    return merged


_SHARDS: dict[int, Path] = {}


def bundled_shards(tmp_path_factory, window: int = 2048) -> Path:
    """manifest.json of the bundled real genomes sharded at `window` bp (once per test session)."""
    if window not in _SHARDS:
        from data_fixtures import BUNDLED_YAML, shard

        out = tmp_path_factory.mktemp(f"shards{window}")
        assert shard(BUNDLED_YAML, out, window) == 0
        _SHARDS[window] = out / "manifest.json"
    return _SHARDS[window]


def run_cli(nprocs: int, args: list[str], out: Path, timeout: float = 600) -> tuple[list[int], str]:
    """launch/pretrain.py on `nprocs` ranks (srun-style env); returns exit codes and rank 0's output."""
    codes = wait(start_cli(nprocs, args, out), out, timeout)
    return codes, (out / "log_rank0.txt").read_text()


def start_cli(nprocs: int, args: list[str], out: Path) -> list[subprocess.Popen]:
    out.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    procs = []
    for rank in range(nprocs):
        env = _rank_env(rank, nprocs, port)
        log = open(out / f"log_rank{rank}.txt", "w")
        procs.append(subprocess.Popen([sys.executable, str(REPO / "launch" / "pretrain.py"), *args], env=env,
                                      cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
    return procs
