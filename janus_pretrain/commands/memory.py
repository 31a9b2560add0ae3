"""Predicted peak memory per GPU of one training step of a run config, with a breakdown.

    janus memory --config configs/1m.yaml [--set k=v ...] [--ranks 8] [--cp 8] [--device-gb 80] \
        [--backend cuda|cuda-flex|torch-cuda|reference] [--seq-len N]

--cp N predicts context parallelism over N of the ranks (parallel.cp_size): per GPU its seq_len / N
positions, and the ring attention's key/value blocks of that slice.

Backends are kernel sets: cuda = mamba_ssm,
causal_conv1d, flash attention and the causal-pieces fusion (the GPU default); cuda-flex = the
same with model.fusion_kernel=flex; torch-cuda = a GPU without kernel packages; reference = the
CPU reference kernels in fp32. The model and its assumptions: janus_pretrain/memory.py,
docs/memory.md. Exit codes: 0 done, 2 bad input (one-line message).
"""
from __future__ import annotations

from janus_pretrain import cli


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from janus_pretrain.memory import BACKENDS

    parser = cli.parser(__doc__, prog)
    parser.add_argument("--config", required=True, help="run YAML, e.g. configs/1m.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an existing key (repeatable)")
    cli.flag(parser, "--ranks", "--gpus", type=int, default=1,
             help="GPUs (ZeRO-2 partitions over all of them; ranks / cp read different samples)")
    parser.add_argument("--cp", type=int, default=0, help="parallel.cp_size: ranks sharing each sample "
                                                          "(default: the config's)")
    parser.add_argument("--device-gb", type=float, default=80.0, help="memory of one device, in GB (10^9 bytes)")
    parser.add_argument("--backend", choices=BACKENDS, default="cuda",
                        help="kernel set: cuda (packages + fusion pieces), cuda-flex, torch-cuda, reference")
    parser.add_argument("--seq-len", type=int, default=0, help="default: data.seq_len of the config")
    args = parser.parse_args(argv)
    if args.ranks < 1 or args.device_gb <= 0 or args.seq_len < 0 or args.cp < 0:
        parser.error("--ranks must be >= 1, --device-gb > 0, --seq-len >= 0 and --cp >= 1 (0: the config's)")
    from janus_pretrain.config import ConfigError, load_config

    from janus_pretrain.memory import report

    try:
        config = load_config(args.config, args.overrides + ([f"parallel.cp_size={args.cp}"] if args.cp else []))
        print(report(config, args.seq_len or config.data.seq_len, args.backend, args.ranks, args.device_gb,
                     args.config))
    except ConfigError as exc:
        return cli.fail(exc)
    return 0
