"""Fusion attention alone, forward + backward: the exact query-blocked reference (old) against the
causal pieces merged by log-sum-exp (new), at the model's head shape.

    python bench/fusion_throughput.py                          # L = 4096, 16384 (72-dim: H=4, Dh=18)
    python bench/fusion_throughput.py --lengths 4096 16384 65536 --reference-max 16384
    python bench/fusion_throughput.py --d-model 144            # the 131k/1m models' head dim 36

Old and new alternate within each length (machines here are shared and noisy) and the best of
--repeats is kept; the printed figure is the ratio old / new measured in the same run. Lengths
above --reference-max run the new path only (the reference's quadratic work takes tens of
minutes there on 2 cores). On a GPU the new path runs the kernel select_kernels picks.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from janus_pretrain.model.fusion_attention import fusion_attention_reference
from janus_pretrain.model.kernels import select_kernels

QUERY_BLOCK = 1024  # model.fusion_query_block default (the model shrinks it past its score budget)


# wall: elapsed time; process: CPU time of this process, which a crowded shared machine does not
# inflate (meaningful with --threads 1; not on a GPU, whose work the CPU clock does not see)
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def seconds(fn, q, k, v, grad, clock=time.perf_counter) -> float:
    """Time of one forward + backward."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    sync = torch.cuda.synchronize if q.is_cuda else (lambda: None)
    sync()
    start = clock()
    out = fn(*leaves)
    out.backward(grad)
    sync()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--reference-max", type=int, default=16384, help="longest L the reference runs at")
    parser.add_argument("--d-model", type=int, default=72)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per path and length (best kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="process: CPU time (for --threads 1 on a shared CPU machine)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    if args.clock == "process" and device.type == "cuda":
        parser.error("--clock process measures CPU time; on a GPU use the wall clock")
    clock = CLOCKS[args.clock]
    kernels = select_kernels("auto", device)
    print(f"fusion attention fwd+bwd, B={args.batch} H={args.heads} Dh={args.d_model // args.heads} {args.dtype} "
          f"on {device.type}, threads={torch.get_num_threads()}, {args.clock} clock; "
          f"new = {kernels.choices['fusion_attention']}")
    rows = []
    for seq_len in args.lengths:
        shape = (args.batch, args.heads, 2 * seq_len, args.d_model // args.heads)
        q, k, v, grad = (torch.randn(shape, device=device, dtype=dtype) for _ in range(4))
        paths = {"new": lambda *t: kernels.fusion_attention(*t, seq_len)}
        if seq_len <= args.reference_max:
            paths["old"] = lambda *t: fusion_attention_reference(*t, seq_len, query_block=QUERY_BLOCK)
        best = {name: float("inf") for name in paths}
        seconds(paths["new"], q, k, v, grad, clock)  # warm-up: allocator, kernel dispatch
        for _ in range(args.repeats):
            for name, fn in paths.items():
                best[name] = min(best[name], seconds(fn, q, k, v, grad, clock))
        row = {"seq_len": seq_len, **{f"{name}_s": round(t, 3) for name, t in best.items()}}
        line = f"  L={seq_len:>7}: new {best['new']:8.2f} s"
        if "old" in best:
            row["old_over_new"] = round(best["old"] / best["new"], 2)
            line += f"   old {best['old']:8.2f} s   old/new = {row['old_over_new']:.2f}x"
        else:
            line += "   old not run (above --reference-max)"
        print(line, flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device.type, "threads": torch.get_num_threads(), "clock": args.clock, "rows": rows},
                      f, indent=1)


if __name__ == "__main__":
    main()
