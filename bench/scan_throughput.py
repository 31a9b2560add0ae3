"""Selective scan on CPU: this tree's chunked scan against a baseline, fwd+bwd, in one run.

    python bench/scan_throughput.py [--lengths 16384 32768 65536] [--dim 288] [--state 16]
        [--baseline-rev 74a9ac4] [--memory] [--launch-lengths 131072 1048576]

The baseline is janus_pretrain/model/scan.py as committed at --baseline-rev (default 74a9ac4, the
channel-slab scan before issue 24), loaded from git, so both are measured on the same machine in
the same run. Per L it prints tokens/s of each and their ratio; with --memory the peak resident
memory one fwd+bwd adds over its inputs (a fresh process per scan and L, ru_maxrss); and the aten
ops of one fwd+bwd counted on meta tensors (no compute), the number of kernels a GPU launches,
also at --launch-lengths (the 131k and 1 Mbp scale steps) where the CPU would take too long.
--with-sequential adds the step-by-step oracle (slow; only up to --max-seq-len).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from janus_pretrain.model import scan as current

REPO = Path(__file__).resolve().parents[1]


def load_baseline(rev: str):
    """The scan module as committed at rev, imported under another name."""
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:janus_pretrain/model/scan.py"],
                          check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "scan_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("scan_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_inputs(length, dim, state, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)

    def leaf(t):
        return t.requires_grad_()

    return dict(
        u=leaf(torch.randn(batch, dim, length, generator=g)),
        delta=leaf(torch.randn(batch, dim, length, generator=g) - 3),
        A=leaf(-torch.arange(1, state + 1).float().repeat(dim, 1)),
        B=leaf(torch.randn(batch, state, length, generator=g)),
        C=leaf(torch.randn(batch, state, length, generator=g)),
        D=leaf(torch.ones(dim)),
        z=leaf(torch.randn(batch, dim, length, generator=g)),
        delta_bias=leaf(torch.zeros(dim)),
        delta_softplus=True,
    )


def fwd_bwd(fn, args, **kw):
    fn(**args, **kw).sum().backward()


def seconds(fn, args, repeats, **kw):
    fwd_bwd(fn, args, **kw)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fwd_bwd(fn, args, **kw)
        best = min(best, time.perf_counter() - t0)
    return best


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def launches(module, length, dim, state, chunk):
    """aten ops of one fwd+bwd on meta tensors: what a GPU would launch (views included)."""
    def meta(*shape):
        return torch.empty(*shape, device="meta", requires_grad=True)

    inputs = dict(u=meta(1, dim, length), delta=meta(1, dim, length), A=meta(dim, state),
                  B=meta(1, state, length), C=meta(1, state, length), D=meta(dim), z=meta(1, dim, length),
                  delta_bias=meta(dim), delta_softplus=True)
    with _CountOps() as counter:
        fwd_bwd(module.selective_scan_chunked, inputs, chunk=chunk)
    return counter.ops


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_child(which, rev, length, dim, state, chunk):
    """In a fresh process: peak RSS growth of one fwd+bwd over the RSS holding the inputs."""
    module = current if which == "current" else load_baseline(rev)
    inputs = make_inputs(length, dim, state)
    base = _rss_bytes()
    fwd_bwd(module.selective_scan_chunked, inputs, chunk=chunk)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)


def peak_mib(which, rev, length, dim, state, chunk):
    out = subprocess.run([sys.executable, __file__, "--peak-child", which, str(length), "--dim", str(dim),
                          "--state", str(state), "--chunk", str(chunk), "--baseline-rev", rev],
                         check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768, 65536])
    ap.add_argument("--dim", type=int, default=288, help="Di, the Mamba inner width (288: configs/1m.yaml)")
    ap.add_argument("--state", type=int, default=16, help="N, the SSM state size")
    ap.add_argument("--chunk", type=int, default=64, help="model.scan_chunk")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--baseline-rev", default="74a9ac4", help="git revision of the baseline scan.py")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory (slower)")
    ap.add_argument("--launch-lengths", type=int, nargs="*", default=[131072, 1048576])
    ap.add_argument("--with-sequential", action="store_true", help="also time the step-by-step oracle")
    ap.add_argument("--max-seq-len", type=int, default=4096, help="longest L for the oracle")
    ap.add_argument("--peak-child", nargs=2, metavar=("WHICH", "L"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_child:
        which, length = args.peak_child
        return _peak_child(which, args.baseline_rev, int(length), args.dim, args.state, args.chunk)
    baseline = load_baseline(args.baseline_rev)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, B=1 Di={args.dim} N={args.state} "
          f"chunk={args.chunk}, fwd+bwd; baseline = scan.py at {args.baseline_rev}, this tree = "
          f"time blocks of {current.SCAN_BLOCK_STEPS} steps")
    print(f"{'L':>8} {'new s':>8} {'base s':>8} {'speed x':>8} {'new MiB':>8} {'base MiB':>9} "
          f"{'new ops':>8} {'base ops':>9} {'ops ratio':>9}")
    for length in args.lengths:
        inputs = make_inputs(length, args.dim, args.state)
        new = seconds(current.selective_scan_chunked, inputs, args.repeats, chunk=args.chunk)
        base = seconds(baseline.selective_scan_chunked, inputs, args.repeats, chunk=args.chunk)
        mem_new = mem_base = float("nan")
        if args.memory:
            mem_new = peak_mib("current", args.baseline_rev, length, args.dim, args.state, args.chunk)
            mem_base = peak_mib("baseline", args.baseline_rev, length, args.dim, args.state, args.chunk)
        ops_new = launches(current, length, args.dim, args.state, args.chunk)
        ops_base = launches(baseline, length, args.dim, args.state, args.chunk)
        print(f"{length:>8} {new:>8.2f} {base:>8.2f} {base / new:>8.2f} {mem_new:>8.0f} {mem_base:>9.0f} "
              f"{ops_new:>8} {ops_base:>9} {ops_base / ops_new:>9.1f}", flush=True)
        if args.with_sequential and length <= args.max_seq_len:
            seq = seconds(current.selective_scan_ref, inputs, 0)
            print(f"{'':>8} sequential oracle {seq:.2f} s: {seq / new:.1f}x the chunked scan's time")
    for length in args.launch_lengths:
        ops_new = launches(current, length, args.dim, args.state, args.chunk)
        ops_base = launches(baseline, length, args.dim, args.state, args.chunk)
        print(f"{length:>8} {'(launches only, meta tensors)':>45} {ops_new:>8} {ops_base:>9} "
              f"{ops_base / ops_new:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
