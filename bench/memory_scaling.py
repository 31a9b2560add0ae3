"""Measured vs predicted peak memory of one forward+backward, over sequence lengths.

    python bench/memory_scaling.py --config configs/1m.yaml                     # 4k..64k, none + layer
    python bench/memory_scaling.py --lengths 4096 8192 --checkpointing layer --json out.json
    python bench/memory_scaling.py --from-json out.json                         # re-print, re-predict

Each point runs in a fresh subprocess (so one point's allocator state never leaks into the next):
build the model, run a warm-up step at 256 bp (lazy initialisation, thread pools), drop the
gradients, then measure one forward+backward (loss included, micro batch 1) at the length.

What "measured" is:
- CPU: the rise of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs
  just before the step; ru_maxrss where that is refused) over the resident set just before the
  step. It counts every page the step touched: activations, parameter gradients, autograd
  buffers, allocator slack. glibc is told to serve blocks >= 64 KiB by mmap
  (MALLOC_MMAP_THRESHOLD_), so freed tensors go back to the OS instead of staying resident.
- CUDA (unchanged script on a GPU machine): torch.cuda.max_memory_allocated() minus the
  allocated bytes before the step, model in bf16 as DeepSpeed runs it.
"Predicted" is janus_pretrain.memory's step estimate for the same backend and dtype: parameter
gradients + the activation peak + workspace (no optimizer states: this bench has no optimizer).
The fit is bytes = a + b * L by least squares, and the slope between consecutive lengths is
printed: a slope that rises with L would be an L^2 term; constant or falling slopes are not.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARMUP_LEN = 256


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes(reset_worked: bool) -> int:
    if reset_worked:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_point(config_path: str, overrides: list[str], seq_len: int, seed: int = 0) -> dict:
    """One forward+backward at seq_len in this process; returns measured bytes and timings."""
    import torch

    from janus_pretrain.config import load_config
    from janus_pretrain.model import JanusForPretraining

    cuda = torch.cuda.is_available()
    overrides = list(overrides) + ([] if cuda else ["model.kernels=reference"])
    config = load_config(config_path, overrides)
    torch.manual_seed(seed)
    model = JanusForPretraining(config.model)
    dtype = torch.bfloat16 if cuda and config.train.precision == "bf16" else torch.float32
    device = torch.device("cuda" if cuda else "cpu")
    model = model.to(device=device, dtype=dtype)

    def step(length: int) -> None:
        ids = torch.randint(7, 11, (1, length), device=device)  # A/C/G/T ids
        model(ids, labels=ids).loss.backward()

    step(WARMUP_LEN)
    kernel_set = model.backbone.kernels.get(device)
    kernels, fusion = kernel_set.name, kernel_set.fusion  # e.g. "cuda" + "pieces", "torch" + "pieces"
    model.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
        reset = _reset_peak()
    start = time.perf_counter()
    step(seq_len)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _peak_rss_bytes(reset)
    return {"seq_len": seq_len, "checkpointing": config.model.activation_checkpointing,
            "backend": kernels, "fusion": fusion, "device": device.type, "dtype": str(dtype).replace("torch.", ""),
            "measured_bytes": peak - before, "seconds": time.perf_counter() - start,
            "how": "cuda max_memory_allocated" if cuda else ("VmHWM after clear_refs" if reset else "ru_maxrss")}


def run_point_subprocess(args, seq_len: int, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--config", args.config, "--lengths", str(seq_len)]
    for override in [*args.set, f"model.activation_checkpointing={mode}"]:
        cmd += ["--set", override]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"seq_len": seq_len, "checkpointing": mode, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_predictions(config_path: str, overrides: list[str], rows: list[dict]) -> None:
    from janus_pretrain.config import load_config
    from janus_pretrain.memory import step_estimate
    from janus_pretrain.model.kernels import kernel_set

    for row in rows:
        if "error" in row:
            continue
        config = load_config(config_path, [*overrides, f"model.activation_checkpointing={row['checkpointing']}"])
        backend = kernel_set(row.get("backend", "reference"), row.get("fusion", "reference"), row.get("device", "cpu"))
        row["predicted_bytes"] = step_estimate(config, row["seq_len"], backend).total


def fit(rows: list[dict]) -> tuple[float, float]:
    """Least-squares bytes = a + b * L."""
    xs = [r["seq_len"] for r in rows]
    ys = [r["measured_bytes"] for r in rows]
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return my - b * mx, b


def report(rows: list[dict]) -> str:
    mib = 1 << 20
    lines = ["| checkpointing | seq_len | measured MiB | predicted MiB | predicted/measured | measured B/bp | seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows, key=lambda r: (r["checkpointing"], r["seq_len"])):
        if "error" in r:
            lines.append(f"| {r['checkpointing']} | {r['seq_len']} | failed: {r['error']} | | | | |")
            continue
        pred = r.get("predicted_bytes")
        ratio = f"{pred / r['measured_bytes']:.3f}" if pred else "-"
        lines.append(f"| {r['checkpointing']} | {r['seq_len']} | {r['measured_bytes'] / mib:.0f} | "
                     f"{pred / mib if pred else float('nan'):.0f} | {ratio} | "
                     f"{r['measured_bytes'] / r['seq_len']:.0f} | {r.get('seconds', 0):.0f} |")
    for mode in sorted({r["checkpointing"] for r in rows}):
        good = sorted((r for r in rows if r["checkpointing"] == mode and "error" not in r), key=lambda r: r["seq_len"])
        if len(good) < 2:
            continue
        a, b = fit(good)
        slopes = [(q["measured_bytes"] - p["measured_bytes"]) / (q["seq_len"] - p["seq_len"])
                  for p, q in zip(good, good[1:])]
        lines.append(f"\n{mode}: fit measured = {a / mib:.0f} MiB + {b:.0f} B/bp x L; slope between consecutive "
                     f"lengths: {', '.join(f'{s:.0f}' for s in slopes)} B/bp "
                     f"(last/first = {slopes[-1] / slopes[0]:.3f}: 1 = linear, < 1 = fixed buffers filling up, "
                     f"> 1 = an L^2 term)")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "1m.yaml"))
    parser.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    parser.add_argument("--checkpointing", nargs="+", default=["none", "layer"], choices=["none", "layer", "block"])
    parser.add_argument("--json", help="write the measured rows here (temp name, then rename)")
    parser.add_argument("--from-json", help="re-print (and re-predict) rows measured earlier")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_point(args.config, args.set, args.lengths[0])))
        return
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())
    else:
        rows = []
        for mode in args.checkpointing:
            for seq_len in args.lengths:
                rows.append(run_point_subprocess(args, seq_len, mode))
                print(json.dumps(rows[-1]), flush=True)
                if args.json:  # after every point, so a long run keeps what it measured
                    tmp = Path(f"{args.json}.tmp{os.getpid()}")
                    tmp.write_text(json.dumps(rows, indent=1))
                    os.replace(tmp, args.json)
    add_predictions(args.config, args.set, rows)
    print(report(rows))


if __name__ == "__main__":
    main()
