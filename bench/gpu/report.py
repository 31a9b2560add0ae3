"""Environment record and final summary of a bench/gpu/check.sh run.

    python bench/gpu/report.py env --out OUT/env.json
    python bench/gpu/report.py summary --dir OUT            # writes OUT/summary.json, prints a table

The summary joins stages.jsonl (what ran, exit codes, times, timeouts) and scale.jsonl (measured
against predicted memory per config) so one file holds what the run found.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

GB = 1e9


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {type(exc).__name__}"


def environment() -> dict:
    import torch

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    for name in ("deepspeed", "flash_attn", "mamba_ssm", "causal_conv1d"):
        try:
            module = __import__(name)
            env[name] = getattr(module, "__version__", "unknown")
        except Exception as exc:  # a package whose CUDA extension fails to load counts as absent
            env[name] = f"absent ({type(exc).__name__})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                   multiprocessors=props.multi_processor_count)
        env["nvidia_smi"] = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm",
                                  "--format=csv,noheader"])
    return env


def _lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut off by a killed stage
    return rows


def summary(out_dir: Path) -> dict:
    stages = _lines(out_dir / "stages.jsonl")
    events = _lines(out_dir / "scale.jsonl")
    scale = {}
    for e in events:
        row = scale.setdefault(e.get("label", "?"), {"steps_done": 0})
        if e["event"] == "step":
            row["steps_done"] = e["step"]
            row.update({k: e[k] for k in ("max_memory_allocated", "max_memory_reserved", "peak_rss") if k in e})
        elif e["event"] in ("start", "end", "error"):
            row.update({k: v for k, v in e.items() if k not in ("event", "traceback", "predicted_terms")})
            row["status"] = {"start": "started", "end": "done", "error": "error"}[e["event"]]
    result = {"environment": json.loads((out_dir / "env.json").read_text()) if (out_dir / "env.json").is_file()
              else None, "stages": stages, "scale": scale}
    (out_dir / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def print_table(result: dict) -> None:
    print("stage               rc   seconds  timed out")
    for s in result["stages"]:
        print(f"{s['stage']:<18} {s['rc']:>3} {s['seconds']:>9} {str(s['timed_out']):>10}")
    print("scale run     seq_len   status  steps  measured GB  reserved GB  predicted GB  pred/meas  s/step  tokens/s")
    for label, r in result["scale"].items():
        measured = r.get("max_memory_allocated") or r.get("peak_rss") or 0
        ratio = r.get("predicted_bytes", 0) / measured if measured else float("nan")
        print(f"{label:<12} {r.get('seq_len', 0):>9,} {r.get('status', '?'):>8} {r['steps_done']:>6} "
              f"{measured / GB:>12.2f} {r.get('max_memory_reserved', 0) / GB:>12.2f} "
              f"{r.get('predicted_bytes', 0) / GB:>13.2f} {ratio:>10.2f} {r.get('step_s', float('nan')):>7.2f} "
              f"{r.get('tokens_per_s', float('nan')):>9.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    env = sub.add_parser("env", help="write the environment record")
    env.add_argument("--out", required=True)
    summ = sub.add_parser("summary", help="join stages.jsonl and scale.jsonl into summary.json")
    summ.add_argument("--dir", required=True)
    args = parser.parse_args()
    if args.verb == "env":
        record = environment()
        Path(args.out).write_text(json.dumps(record, indent=1))
        print(json.dumps(record))
    else:
        print_table(summary(Path(args.dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
