"""Selective scan throughput on CPU: chunked scan vs the sequential reference, fwd+bwd.

    python bench/scan_throughput.py [--lengths 1024 4096 16384] [--dim 144] [--state 16]

Prints tokens/s of each and the chunked/sequential ratio, both measured in this run, and the
peak resident memory one forward+backward of the chunked scan adds over its inputs (fresh
process per L, ru_maxrss), so that its growth with L can be read off. The sequential reference is skipped above
--max-seq-len (it keeps one autograd node per step).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import torch

from janus_pretrain.model.scan import selective_scan_chunked, selective_scan_ref


def make_inputs(length, dim, state, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.randn(batch, dim, length, generator=g).requires_grad_(),
        delta=(torch.randn(batch, dim, length, generator=g) - 3).requires_grad_(),
        A=(-torch.arange(1, state + 1).float().repeat(dim, 1)).requires_grad_(),
        B=torch.randn(batch, state, length, generator=g).requires_grad_(),
        C=torch.randn(batch, state, length, generator=g).requires_grad_(),
        D=torch.ones(dim).requires_grad_(),
        z=torch.randn(batch, dim, length, generator=g).requires_grad_(),
        delta_bias=torch.zeros(dim).requires_grad_(),
        delta_softplus=True,
    )


def fwd_bwd(fn, args, **kw):
    y = fn(**args, **kw)
    y.sum().backward()


def tokens_per_s(fn, args, length, repeats, **kw):
    fwd_bwd(fn, args, **kw)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fwd_bwd(fn, args, **kw)
        best = min(best, time.perf_counter() - t0)
    return length * next(iter(args.values())).shape[0] / best


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_child(length, dim, state, chunk):
    """In a fresh process: peak RSS growth of one fwd+bwd over the RSS holding the inputs."""
    inputs = make_inputs(length, dim, state)
    base = _rss_bytes()
    fwd_bwd(selective_scan_chunked, inputs, chunk=chunk)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)


def peak_bytes(length, dim, state, chunk):
    out = subprocess.run([sys.executable, __file__, "--peak-child", str(length), "--dim", str(dim),
                          "--state", str(state), "--chunk", str(chunk)],
                         check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--dim", type=int, default=144, help="Di, the Mamba inner width")
    ap.add_argument("--state", type=int, default=16, help="N, the SSM state size")
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-seq-len", type=int, default=4096, help="longest L for the reference")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory (slower)")
    ap.add_argument("--peak-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_child:
        return _peak_child(args.peak_child, args.dim, args.state, args.chunk)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, B=1 Di={args.dim} "
          f"N={args.state} chunk={args.chunk}, fwd+bwd")
    print(f"{'L':>8} {'chunked tok/s':>14} {'seq tok/s':>10} {'ratio':>7} {'peak MiB':>9} "
          f"{'bytes/token':>12}")
    for length in args.lengths:
        inputs = make_inputs(length, args.dim, args.state)
        fast = tokens_per_s(selective_scan_chunked, inputs, length, args.repeats, chunk=args.chunk)
        slow = ratio = float("nan")
        if length <= args.max_seq_len:
            slow = tokens_per_s(selective_scan_ref, inputs, length, 1)
            ratio = fast / slow
        mib = per_tok = float("nan")
        if args.memory:
            peak = peak_bytes(length, args.dim, args.state, args.chunk)
            mib, per_tok = peak / 2**20, peak / length
        print(f"{length:>8} {fast:>14.0f} {slow:>10.0f} {ratio:>7.1f} {mib:>9.1f} {per_tok:>12.0f}",
              flush=True)


if __name__ == "__main__":
    main()
