"""Pretrain a Janus model: parse, load the run config, build, train.

    janus pretrain --config configs/tiny.yaml                                  # 1 process
    janus pretrain --config configs/1m.yaml --dry-run [--ranks 8]              # plan only, no training
    torchrun --standalone --nproc_per_node 2 launch/pretrain.py --config ...   # 2 processes
    deepspeed --num_accelerators 2 launch/pretrain.py --config ...             # CPU machine
    deepspeed --num_gpus 8 launch/pretrain.py --config configs/1m.yaml         # GPU machine
    srun python launch/pretrain.py --config ...                                # Slurm (see launch/slurm_pretrain.sh)

Launchers need a script path, so several processes start launch/pretrain.py (the same command);
`janus pretrain` itself runs in the one process it is started in.
--dry-run prints the resolved config (YAML), the layer map, parameter counts, the batch plan for
--ranks ranks (default: the launcher's world size, else 1), the memory model's prediction and
whether the data is ready, and exits 0 without training or initialising DeepSpeed (2: the config
cannot run on that many ranks).
Exit codes: 0 done, 2 bad config or damaged shard (one-line message), 3 too many NaN/inf steps,
75 preempted after saving a checkpoint (requeue and rerun; --resume auto continues), 76 a rank made
no progress for train.watchdog_s (requeue; resumes from the latest checkpoint).
"""
from __future__ import annotations

import argparse
import os

from janus_pretrain import cli


def dry_run(config, ranks: int) -> int:
    """Print the plan (janus_pretrain/engine/dry_run.py); 2 if the config cannot run on `ranks`."""
    from janus_pretrain.config import ConfigError
    from janus_pretrain.engine.dry_run import dry_run_lines

    try:
        for line in dry_run_lines(config, ranks):
            print(line, flush=True)
    except ConfigError as exc:
        return cli.fail(exc)
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = cli.parser(__doc__, prog)
    parser.add_argument("--config", required=True, help="run YAML, e.g. configs/tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an existing key, e.g. --set train.steps=10 (repeatable)")
    parser.add_argument("--resume", default=None, help="auto (default: latest complete checkpoint if any), "
                        "none (start fresh) or a checkpoint tag such as step_00000100")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit; train nothing")
    parser.add_argument("--ranks", type=int, default=0,
                        help="--dry-run: ranks to plan for (default: the launcher's WORLD_SIZE, else 1)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"checkpoint.resume={args.resume}"] if args.resume else [])
    from janus_pretrain.config import ConfigError, load_config

    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        return cli.fail(exc)
    if args.dry_run:
        ranks = args.ranks or int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))
        return dry_run(config, ranks)
    from janus_pretrain.engine.distributed import exit_after
    from janus_pretrain.engine.run import run_pretraining

    exit_after(lambda: run_pretraining(config))  # the process ends here (see exit_after)
