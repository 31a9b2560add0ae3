#!/usr/bin/env python
"""Pretrain a Janus model: parse, load the run config, build, train.

    python launch/pretrain.py --config configs/tiny.yaml                       # 1 process
    torchrun --standalone --nproc_per_node 2 launch/pretrain.py --config ...   # 2 processes
    deepspeed --num_accelerators 2 launch/pretrain.py --config ...             # CPU machine
    deepspeed --num_gpus 8 launch/pretrain.py --config configs/1m.yaml         # GPU machine
    srun python launch/pretrain.py --config ...                                # Slurm (see launch/slurm_pretrain.sh)

Exit codes: 0 done, 2 bad config or damaged shard (one-line message), 3 too many NaN/inf steps,
75 preempted after saving a checkpoint (requeue and rerun; --resume auto continues), 76 a rank made
no progress for train.watchdog_s (requeue; resumes from the latest checkpoint).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

from janus_pretrain import cli  # noqa: E402
from janus_pretrain.config import ConfigError, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--config", required=True, help="run YAML, e.g. configs/tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an existing key, e.g. --set train.steps=10 (repeatable)")
    parser.add_argument("--resume", default=None, help="auto (default: latest complete checkpoint if any), "
                        "none (start fresh) or a checkpoint tag such as step_00000100")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"checkpoint.resume={args.resume}"] if args.resume else [])
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        return cli.fail(exc)
    from janus_pretrain.engine.run import run_pretraining

    return run_pretraining(config)


if __name__ == "__main__":
    sys.exit(main())
