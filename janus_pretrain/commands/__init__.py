"""`janus <verb>`: one command for the whole lifecycle, one module per verb.

Each module's docstring is its manual (`janus <verb> --help`) and its `main(argv, prog)` is what
both `janus <verb>` and the script wrappers (launch/*.py, data_prep/*.py) call, so the two spellings
take the same flags and behave the same. Modules import heavy packages (torch, DeepSpeed) only
inside main, so `janus --help` and argument errors are instant.
"""
from __future__ import annotations

import importlib
import sys

from janus_pretrain import __version__, cli

# verb -> (module under janus_pretrain.commands, the script wrapper launchers and older docs use, if any)
VERBS = {
    "shard": ("shard", "data_prep/shard_genomes.py"),
    "pretrain": ("pretrain", "launch/pretrain.py"),
    "convert": ("convert", "launch/convert_checkpoint.py"),
    "finetune": ("finetune", "launch/finetune.py"),
    "embed": ("embed", "launch/embed.py"),
    "score-variants": ("score_variants", "launch/score_variants.py"),
    "evaluate": ("evaluate", "launch/evaluate.py"),
    "make-tasks": ("make_tasks", "data_prep/make_tasks.py"),
    "memory": ("memory", None),
}


def command_module(verb: str):
    return importlib.import_module(f"janus_pretrain.commands.{VERBS[verb][0]}")


def usage() -> str:
    lines = [f"janus {__version__}: pretrain JanusDNA-style DNA models (README.md, docs/)", "",
             "usage: janus <command> [--help] [flags]", "       janus --version", "", "commands:"]
    for verb, (_, script) in VERBS.items():
        summary = (command_module(verb).__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {verb:<15} {summary}")
    lines += ["", "Each command is also a script, for launchers that need a path (deepspeed, torchrun, srun):",
              "  " + ", ".join(script for _, script in VERBS.values() if script),
              "Without installing (a fresh clone): python -m janus_pretrain <command> ..."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"janus {__version__}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        return cli.fail(f"janus: unknown command {verb!r}; commands: {', '.join(VERBS)} (see janus --help)")
    return command_module(verb).main(rest, prog=f"janus {verb}")


if __name__ == "__main__":
    sys.exit(main())
