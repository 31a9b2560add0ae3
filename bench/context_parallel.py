"""Peak memory per rank and time of the exchanges under context parallelism, CPU ranks (gloo).

    python bench/context_parallel.py                                  # configs/1m.yaml, 2 layers, 16 kbp, cp 1 2 4
    python bench/context_parallel.py --seq-len 32768 --cp 1 2 --json out.json
    python bench/context_parallel.py --from-json out.json             # re-print (or the docs' JSON)

For each cp, fresh processes (one per rank, gloo, one thread each) build the same model (same
seed), run a warm-up step at 256 bp per rank, drop the gradients, and measure one forward and
backward of one sample of --seq-len bases, each rank holding its seq_len / cp slice
(model/context_parallel.py; cp 1 is one process without a group).

Measured per rank:
- memory: the rise of the peak resident set over the resident set just before the step (VmHWM
  after clear_refs, the measure of bench/memory_scaling.py: every page the step touched, glibc
  told to return freed blocks >= 64 KiB to the OS). Not tracemalloc: torch's CPU tensors bypass
  Python's allocator, so tracemalloc would not see them.
- step: wall time and CPU time (this process's, all threads) of the forward+backward; exchanges:
  the same inside the model's exchanges
  (the ring attention's send-and-receive steps, posting and waiting, the scan carry's all-gathers
  and their reduce-scatters, the all-reduces of the loss and the router statistics), timed by
  wrapping them during the step. A collective's time includes
  waiting for the slowest rank of the group, so it is the exchanges' cost as a rank sees it; their
  CPU time is the work a rank does in them (copies, gloo's sends and reductions) without the wait.
Printed: per cp the largest rank's memory and its ratio to cp 1, the memory model's per-rank
prediction (janus_pretrain.memory.step_estimate), the slowest rank's step time and the mean
exchange time, both as ratios to cp 1's step time in the same run, and the same in CPU seconds
summed over the group's ranks (the work of one sample; on a shared or small machine the robust
one: with fewer cores than ranks the ranks take turns on the cores and wall times include waiting
for a core; the machine's cores are printed with the table).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from memory_scaling import _peak_rss_bytes, _reset_peak, _rss_bytes  # noqa: E402  (one measure of memory)

SMALL = ["model.n_layers=2", "model.num_experts=4", "model.activation_checkpointing=layer",
         "model.kernels=reference", "train.precision=fp32"]
WARMUP_PER_RANK = 256
EXCHANGES = ("_all_gather", "_reduce_scatter")  # context_parallel.py's collectives (plus dist.all_reduce)


class ExchangeClock:
    """Wall time spent inside the model's collectives while installed."""

    def __init__(self):
        self.seconds = 0.0
        self.cpu_seconds = 0.0  # this process's CPU time inside them (all its threads: gloo's included)
        self.calls = 0
        self._saved = []

    def _timed(self, fn):
        def call(*args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.cpu_seconds += time.process_time() - cpu
                self.calls += 1
        return call

    def __enter__(self):
        import torch.distributed as dist

        from janus_pretrain.model import context_parallel

        for owner, name in [(context_parallel, n) for n in EXCHANGES] + [(dist, "all_reduce")]:
            self._saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, self._timed(getattr(owner, name)))
        ring = context_parallel._Ring
        self._saved.append((ring, "pass_on", ring.pass_on))
        setattr(ring, "pass_on", self._timed_ring(ring.pass_on))
        return self

    def _timed_ring(self, pass_on):
        """A ring step is posted, then waited for later: both count (as one call)."""
        def call(*args, **kwargs):
            wait = self._timed(pass_on)(*args, **kwargs)
            self.calls -= 1
            return self._timed(wait)
        return call

    def __exit__(self, *exc):
        for owner, name, fn in reversed(self._saved):
            setattr(owner, name, fn)


def _rank_main(rank: int, size: int, port: int, config_path: str, overrides: list[str], seq_len: int,
               out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from janus_pretrain.config import load_config
    from janus_pretrain.model import JanusForPretraining

    torch.set_num_threads(1)
    config = load_config(config_path, [*overrides, f"parallel.cp_size={size}", f"data.seq_len={seq_len}"])
    group = None
    if size > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
        group = dist.group.WORLD
    torch.manual_seed(0)
    model = JanusForPretraining(config.model, cp_group=group)

    def step(length: int) -> None:
        ids = torch.randint(7, 11, (1, length), generator=torch.Generator().manual_seed(length))  # same on every rank
        local = model.local_slice(ids)
        model(local, labels=local).loss.backward()

    step(WARMUP_PER_RANK * size)
    model.zero_grad(set_to_none=True)
    before = _rss_bytes()
    reset = _reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    with ExchangeClock() as clock:
        step(seq_len)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak = _peak_rss_bytes(reset)
    row = {"rank": rank, "measured_bytes": peak - before, "seconds": seconds, "exchange_seconds": clock.seconds,
           "cpu_seconds": cpu_seconds, "exchange_cpu_seconds": clock.cpu_seconds, "exchange_calls": clock.calls, "how": "VmHWM after clear_refs" if reset else "ru_maxrss"}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(row))
    if group is not None:
        dist.destroy_process_group()


def measure(config_path: str, overrides: list[str], seq_len: int, cp: int) -> dict:
    """One step of one sample of seq_len over cp fresh rank processes; per-rank rows."""
    import torch.multiprocessing as mp

    from janus_pretrain.engine.distributed import free_port

    os.environ.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_main, args=(cp, free_port(), config_path, overrides, seq_len, tmp), nprocs=cp)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(cp)]
    return {"cp": cp, "seq_len": seq_len, "ranks": ranks}


def predict(config_path: str, overrides: list[str], row: dict) -> float:
    from janus_pretrain.config import load_config
    from janus_pretrain.memory import step_estimate

    config = load_config(config_path, [*overrides, f"parallel.cp_size={row['cp']}", f"data.seq_len={row['seq_len']}"])
    return step_estimate(config, row["seq_len"], "reference").total


def report(rows: list[dict], cores: int) -> str:
    mib = 1 << 20
    base = next(r for r in rows if r["cp"] == 1)
    base_mem = max(r["measured_bytes"] for r in base["ranks"])
    base_step = max(r["seconds"] for r in base["ranks"])
    lines = [f"seq_len {rows[0]['seq_len']:,}, one sample, fp32 reference kernels, {cores} CPU cores; memory: "
             f"{base['ranks'][0]['how']} rise per rank (largest rank); times: slowest rank's step, mean exchange",
             "| cp | peak MiB / rank | ratio to cp 1 | predicted MiB / rank | step s | step / cp 1 | exchanges s | "
             "exchanges / cp 1 step | CPU s (all ranks) | CPU / cp 1 | exchange CPU s | exchange CPU / cp 1 CPU | "
             "collectives |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base_cpu = sum(r["cpu_seconds"] for r in base["ranks"])
    for row in rows:
        mem = max(r["measured_bytes"] for r in row["ranks"])
        step = max(r["seconds"] for r in row["ranks"])
        exchange = sum(r["exchange_seconds"] for r in row["ranks"]) / len(row["ranks"])
        cpu = sum(r["cpu_seconds"] for r in row["ranks"])
        exchange_cpu = sum(r["exchange_cpu_seconds"] for r in row["ranks"])
        lines.append(f"| {row['cp']} | {mem / mib:.0f} | {mem / base_mem:.3f} | {row['predicted_bytes'] / mib:.0f} | "
                     f"{step:.2f} | {step / base_step:.3f} | {exchange:.2f} | {exchange / base_step:.3f} | "
                     f"{cpu:.2f} | {cpu / base_cpu:.3f} | {exchange_cpu:.2f} | {exchange_cpu / base_cpu:.3f} | "
                     f"{row['ranks'][0]['exchange_calls']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "1m.yaml"))
    parser.add_argument("--set", action="append", default=[], help="override (repeatable); after the small model's")
    parser.add_argument("--seq-len", type=int, default=16384)
    parser.add_argument("--cp", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--from-json", help="print the rows of an earlier run")
    args = parser.parse_args(argv)
    if args.from_json:  # one run's --json, or docs/context_parallel_cpu_measured.json's runs by length
        saved = json.loads(Path(args.from_json).read_text())
        if "rows" in saved:
            print(report(saved["rows"], saved["cores"]))
        for key in (k for k in saved if k.startswith("runs")):  # the docs file: one set of runs per key
            for rows in (v for v in saved[key].values() if isinstance(v, list)):  # beside a "note"
                print(f"{key}:\n{report(rows, saved['cores'])}")
        return
    if 1 not in args.cp:
        parser.error("--cp must include 1: the ratios are to cp 1 in the same run")
    overrides = [*SMALL, *args.set]
    rows = []
    for cp in args.cp:
        row = measure(args.config, overrides, args.seq_len, cp)
        row["predicted_bytes"] = predict(args.config, overrides, row)
        rows.append(row)
        print(json.dumps(row), flush=True)
    cores = os.cpu_count() or 1
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "cores": cores, "overrides": overrides}, indent=1))
    print(report(rows, cores))


if __name__ == "__main__":
    main()
