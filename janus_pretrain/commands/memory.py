"""Predicted peak memory per GPU of one training step of a run config, with a breakdown.

    janus memory --config configs/1m.yaml [--set k=v ...] [--ranks 8] [--device-gb 80] \
        [--backend cuda|cuda-flex|torch-cuda|reference] [--seq-len N]

Backends are kernel sets: cuda = mamba_ssm,
causal_conv1d, flash attention and the causal-pieces fusion (the GPU default); cuda-flex = the
same with model.fusion_kernel=flex; torch-cuda = a GPU without kernel packages; reference = the
CPU reference kernels in fp32. The model and its assumptions: janus_pretrain/memory.py,
docs/memory.md. Exit codes: 0 done, 2 bad input (one-line message).
"""
from __future__ import annotations

from janus_pretrain import cli


def report(config, seq_len: int, backend: str, ranks: int, device_gb: float, source: str) -> str:
    """The memory model's prediction for `config` as printed by `janus memory` and `--dry-run`."""
    from janus_pretrain.memory import max_seq_len, training_estimate

    est = training_estimate(config, seq_len, backend, ranks)
    device = device_gb * 1e9
    longest = max_seq_len(config, device, backend, ranks)
    m = config.model
    lines = [f"{source}: seq_len {seq_len:,}, micro batch {config.train.micro_batch}, backend {backend}, "
             f"{config.train.precision}, {ranks} GPU(s), ep_size {config.parallel.ep_size}, "
             f"activation_checkpointing {m.activation_checkpointing}, loss_chunk {m.loss_chunk}, "
             f"ffn_chunk {m.ffn_chunk}",
             est.table(),
             f"predicted peak {est.total / 1e9:.1f} GB of {device_gb:.0f} GB "
             f"({'fits' if est.total <= device else 'does NOT fit'}); longest seq_len that fits: {longest:,} bp"]
    if m.objective != "janus":  # the model above counts two streams and the fusion block
        lines.append(f"note: model.objective={m.objective}: predicted for the janus layout; "
                     + ("an upper bound (clm has no backward stream and no fusion block)" if m.objective == "clm"
                        else "mlm has the same layout; its unmasked fusion runs torch's fused attention, "
                             "not modelled apart"))
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from janus_pretrain.memory import BACKENDS

    parser = cli.parser(__doc__, prog)
    parser.add_argument("--config", required=True, help="run YAML, e.g. configs/1m.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an existing key (repeatable)")
    cli.flag(parser, "--ranks", "--gpus", type=int, default=1, help="data-parallel ranks (ZeRO-2 partitions)")
    parser.add_argument("--device-gb", type=float, default=80.0, help="memory of one device, in GB (10^9 bytes)")
    parser.add_argument("--backend", choices=BACKENDS, default="cuda",
                        help="kernel set: cuda (packages + fusion pieces), cuda-flex, torch-cuda, reference")
    parser.add_argument("--seq-len", type=int, default=0, help="default: data.seq_len of the config")
    args = parser.parse_args(argv)
    if args.ranks < 1 or args.device_gb <= 0 or args.seq_len < 0:
        parser.error("--ranks must be >= 1, --device-gb > 0 and --seq-len >= 0")
    from janus_pretrain.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
        print(report(config, args.seq_len or config.data.seq_len, args.backend, args.ranks, args.device_gb,
                     args.config))
    except ConfigError as exc:
        return cli.fail(exc)
    return 0
