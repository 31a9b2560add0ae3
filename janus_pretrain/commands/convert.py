"""Convert a DeepSpeed checkpoint of `janus pretrain` into a standalone model directory.

    janus convert --checkpoint RUN_DIR [--tag latest] --out EXPORT_DIR [--config RUN.yaml] [--overwrite]

RUN_DIR is the run's checkpoint.dir (or a directory holding checkpoints/). Any data-parallel size
and ep_size: the fp32 master weights are rebuilt from the ZeRO-2 optimizer partitions of every
rank (expert groups from the ranks of each expert-parallel rank), checked against the saved
training-dtype weights, and written as EXPORT_DIR/{config.json, model.safetensors, README.md}.
Load with janus_pretrain.export.load_pretrained(EXPORT_DIR); DeepSpeed is not needed for that.
--config refuses a checkpoint whose model section differs from the YAML's. Every file is checked
against the sha256 recorded at save (--no-verify skips it), and no pickle that references code
janus-pretrain never writes is loaded (--trust-checkpoint lifts that, for checkpoints whose author
you trust: unpickling can run arbitrary code).
Exit codes: 0 done, 2 bad input (one-line message).
"""
from __future__ import annotations

from janus_pretrain import cli


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = cli.parser(__doc__, prog)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory of the run")
    parser.add_argument("--tag", default="latest", help="checkpoint tag, e.g. step_00000100 (default: latest)")
    parser.add_argument("--out", required=True, help="export directory to create")
    parser.add_argument("--config", default=None, help="run YAML whose model section the checkpoint must match")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export directory")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the sha256 check of the checkpoint's files")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load pickles that reference code this framework never writes (trusted authors only)")
    cli.add_progress(parser)
    args = parser.parse_args(argv)
    from janus_pretrain.checkpoint.convert import ConvertError, convert_to_export
    from janus_pretrain.config import ConfigError, load_config
    from janus_pretrain.export import ExportError

    try:
        expect = load_config(args.config).model if args.config else None
        converted = convert_to_export(args.checkpoint, args.out, args.tag, expect, args.overwrite,
                                      verify=args.verify, trust=args.trust_checkpoint, progress=args.progress)
    except (ConvertError, ConfigError, ExportError) as exc:
        return cli.fail(exc)
    run = converted.run
    print(f"exported {run['checkpoint']}/{run['tag']} (step {run['step']}, {run['tokens_seen']} tokens seen, "
          f"{run['dp_world_size']} ranks, ep_size {run['ep_size']}) to {args.out}")
    print(f"weights: {converted.precision_note}, written as float32")
    for check in converted.checks:
        print(f"checked: {check}")
    return 0
