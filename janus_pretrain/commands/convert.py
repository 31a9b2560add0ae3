"""Convert between checkpoint formats: ours, exports, and the official JanusDNA code's.

    janus convert --checkpoint RUN_DIR [--tag latest] --out EXPORT_DIR [--config RUN.yaml] [--overwrite]
    janus convert --from janusdna --checkpoint FILE.ckpt --out EXPORT_DIR [--tokenizer janusdna|janusdna_char]
    janus convert --to janusdna --model EXPORT_DIR --out OFFICIAL_DIR

Default (a DeepSpeed checkpoint of `janus pretrain` -> export): RUN_DIR is the run's
checkpoint.dir (or a directory holding checkpoints/). Any data-parallel size and ep_size: the fp32
master weights are rebuilt from the ZeRO-2 optimizer partitions of every rank (expert groups from
the ranks of each expert-parallel rank), checked against the saved training-dtype weights, and
written as EXPORT_DIR/{config.json, model.safetensors, README.md}. Load with
janus_pretrain.export.load_pretrained(EXPORT_DIR); DeepSpeed is not needed for that. --config
refuses a checkpoint whose model section differs from the YAML's. Every file is checked against
the sha256 recorded at save (--no-verify skips it), and no pickle that references code
janus-pretrain never writes is loaded (--trust-checkpoint lifts that, for checkpoints whose author
you trust: unpickling can run arbitrary code).

--from janusdna: an official JanusDNA Lightning checkpoint (the published weights, e.g.
checkpoints/last.ckpt of a run of the official train.py; pretrained or fine-tuned) -> an export
every verb and transformers' AutoModel load, giving the official model's logits (docs/janusdna.md).
Read without running any code from the file. The variant (width, layers, mid attention, final
MLP, fusion head dim) is read from the stored config and checked against the weights. --tokenizer
picks the input mapping recorded in the export: janusdna (default) = the official pretraining
data path (N -> [PAD], other IUPAC -> [UNK], lower case as upper); janusdna_char = the official
benchmark loaders (lower case and IUPAC -> [UNK]).

--to janusdna: an export -> OFFICIAL_DIR/checkpoints/last.ckpt + OFFICIAL_DIR/model_config.json,
the files the official scripts' train.pretrained_model_path and model.config_path point at.
Exit codes: 0 done, 2 bad input (one-line message).
"""
from __future__ import annotations

from janus_pretrain import cli

FORMATS = ("janusdna",)


@cli.one_line_os_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = cli.parser(__doc__, prog)
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--from", dest="source", choices=FORMATS, default=None,
                           help="read a checkpoint of this format (default: our DeepSpeed checkpoint)")
    direction.add_argument("--to", dest="target", choices=FORMATS, default=None,
                           help="write an export (--model) in this format")
    parser.add_argument("--checkpoint", help="checkpoint directory of the run, or (--from janusdna) the .ckpt file")
    parser.add_argument("--model", help="--to janusdna: the export to write out")
    parser.add_argument("--tag", default="latest", help="checkpoint tag, e.g. step_00000100 (default: latest)")
    parser.add_argument("--out", required=True, help="export directory (or --to: official directory) to create")
    parser.add_argument("--config", default=None, help="run YAML whose model section the checkpoint must match")
    parser.add_argument("--tokenizer", choices=("janusdna", "janusdna_char"), default="janusdna",
                        help="--from janusdna: the input mapping recorded in the export (default janusdna)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the sha256 check of the checkpoint's files")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load pickles that reference code this framework never writes (trusted authors only)")
    cli.add_progress(parser)
    args = parser.parse_args(argv)
    if problem := cli.output_problem(args.out):
        return cli.fail(problem)
    if args.target:
        if not args.model:
            parser.error("--to janusdna needs --model EXPORT_DIR")
        return _to_official(args)
    if not args.checkpoint:
        parser.error("--checkpoint is required")
    if args.source:
        return _from_official(args)
    return _from_deepspeed(args)


def _from_deepspeed(args) -> int:
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


def _from_official(args) -> int:
    from janus_pretrain.export import ExportError
    from janus_pretrain.official.convert import OfficialFormatError, import_official

    try:
        imported = import_official(args.checkpoint, args.out, tokenizer=args.tokenizer, overwrite=args.overwrite)
    except (OfficialFormatError, ExportError) as exc:
        return cli.fail(exc)
    print(f"imported official JanusDNA checkpoint {args.checkpoint} to {imported.export_dir} "
          f"(tokenizer {args.tokenizer})")
    for check in imported.checks:
        print(f"checked: {check}")
    if imported.fine_tuned:
        print("note: a fine-tuned checkpoint has no LM head: the export's backbone is the checkpoint's, its logits are "
              "not meaningful (use it with finetune/embed/evaluate, not score-variants)")
    return 0


def _to_official(args) -> int:
    from janus_pretrain.official.convert import OfficialFormatError, export_official

    try:
        written = export_official(args.model, args.out, overwrite=args.overwrite)
    except OfficialFormatError as exc:
        return cli.fail(exc)
    print(f"wrote {written} and {written.parent.parent / 'model_config.json'} (official JanusDNA format)")
    return 0
