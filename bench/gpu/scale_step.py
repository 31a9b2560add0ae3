"""Single-process DeepSpeed ZeRO-2 training steps of a run config at a given length: measured
peak memory, step time and tokens/s next to what janus_pretrain.memory predicts for the same
kernel set. Run by bench/gpu/check.sh (on a GPU, or on CPU at tiny sizes with --dry-run).

    python bench/gpu/scale_step.py --config configs/1m.yaml [--seq-len 2097152] [--steps 2]
                                   [--set key=value ...] --out RESULTS.jsonl --label 1m

One micro batch per optimizer step (grad_accum 1) of random A/C/G/T ids: memory and speed do not
depend on the bases. Appends one JSON line per event to --out as it goes (start, each step, end,
or the error), so a stage killed by its timeout still leaves what it measured. Step 1 includes
warm-up (kernel selection, allocator growth, any torch.compile): it is reported as
first_step_s, and tokens/s is taken over the steps after it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from janus_pretrain.config import load_config  # noqa: E402
from janus_pretrain.memory import training_estimate  # noqa: E402


def _emit(path: str, record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    with open(path, "a") as f:
        f.write(line + "\n")


def _memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"max_memory_allocated": torch.cuda.max_memory_allocated(device),
                "max_memory_reserved": torch.cuda.max_memory_reserved(device),
                "memory_allocated": torch.cuda.memory_allocated(device)}
    return {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args) -> dict:
    import deepspeed

    from janus_pretrain.config import BatchPlan
    from janus_pretrain.engine.deepspeed_config import deepspeed_config
    from janus_pretrain.engine.distributed import init_distributed
    from janus_pretrain.deepspeed_internals import attach_moe_markers
    from janus_pretrain.engine.optim import build_optimizer, build_scheduler
    from janus_pretrain.engine.run import build_model

    overrides = [*args.set, "train.grad_accum=1", "train.global_batch_tokens=0", "parallel.ep_size=1",
                 f"train.steps={args.steps + 1}"]
    if args.seq_len:
        overrides.append(f"data.seq_len={args.seq_len}")
    config = load_config(REPO / args.config if not Path(args.config).is_absolute() else args.config, overrides)
    seq_len, micro = config.data.seq_len, config.train.micro_batch
    ctx = init_distributed(1)
    device = ctx.device
    model = build_model(config, ctx)
    kernels = model.backbone.kernels.get(device)  # what the forward will use on this device
    backend = kernels.kernel_set(device.type)
    predicted = training_estimate(config, seq_len, backend, 1)
    plan = BatchPlan(micro, 1, 1, seq_len)
    attach_moe_markers(model, 1, ctx.ep_group_name)
    optimizer = build_optimizer(model, config.optimizer)
    scheduler = build_scheduler(config.train.steps, config.schedule, config.optimizer.lr)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(config, plan), dist_init_required=False)
    base = {"label": args.label, "config": args.config, "seq_len": seq_len, "micro_batch": micro,
            "precision": config.train.precision, "activation_checkpointing": config.model.activation_checkpointing,
            "device": device.type, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "kernel_set": kernels.name, "fusion": kernels.fusion, "kernels": kernels.choices,
            "predicted_backend": backend, "predicted_bytes": predicted.total,
            "predicted_terms": {t.name: t.bytes for t in predicted.terms}}
    _emit(args.out, {**base, "event": "start", **_memory(device)})
    gen = torch.Generator().manual_seed(0)
    times, loss = [], float("nan")
    for step in range(1, args.steps + 2):
        ids = torch.randint(7, 11, (micro, seq_len), generator=gen).to(device)  # A/C/G/T
        _sync(device)
        start = time.perf_counter()
        out = engine(ids, labels=ids)
        engine.backward(out.loss)
        engine.step()
        _sync(device)
        times.append(time.perf_counter() - start)
        loss = float(out.loss.detach())
        _emit(args.out, {"label": args.label, "event": "step", "step": step, "seconds": times[-1], "loss": loss,
                         **_memory(device)})
    steady = times[1:]
    result = {**base, "event": "end", "first_step_s": times[0], "loss": loss,
              "step_s": sum(steady) / len(steady), "tokens_per_s": micro * seq_len * len(steady) / sum(steady),
              **_memory(device)}
    measured = result.get("max_memory_allocated") or result.get("peak_rss")
    result["predicted_over_measured"] = predicted.total / measured if measured else None
    _emit(args.out, result)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--seq-len", type=int, default=0, help="default: data.seq_len of the config")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after the first (warm-up) step")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", required=True, help="JSON lines, appended")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be >= 1 (tokens/s is measured after the warm-up step)")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    # one process by design: a rank layout inherited from a launcher or a test process would make
    # the process group wait for ranks that never come
    from janus_pretrain.engine.distributed import free_port
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        del os.environ[key]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(free_port()))
    try:
        run(args)
    except Exception as exc:  # OOM included: the record says what failed and at what memory
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        oom = isinstance(exc, torch.cuda.OutOfMemoryError)
        _emit(args.out, {"label": args.label, "event": "error", "oom": oom,
                         "error": f"{type(exc).__name__}: {exc}"[:2000],
                         "traceback": traceback.format_exc()[-4000:], **_memory(device)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
