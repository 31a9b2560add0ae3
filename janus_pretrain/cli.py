"""Conventions every command shares: `janus <verb>` (janus_pretrain/commands/), the thin wrappers
launch/*.py and data_prep/*.py over the same functions.

The wrappers stay files because launchers need them by path (`deepspeed launch/pretrain.py`,
`srun python launch/pretrain.py`, launch/slurm_pretrain.sh) and a fresh clone runs them without
installing; that is also why each one still puts the repository root on sys.path itself.

- `--help` shows the command module's docstring verbatim: it is the command's manual.
- One flag name per thing, in every command: `--model EXPORT_DIR` (an exported model),
  `--checkpoint DIR` (a DeepSpeed checkpoint), `--config RUN.yaml` and `--set KEY=VALUE`, `--out`,
  `--fasta`, `--window-bp` (bases per window or context), `--batch-size`, `--device`, `--threads`,
  `--seed`, `--ranks`, `--progress/--no-progress`. Older spellings stay as hidden aliases
  (`flag`), so scripts written against them keep working.
- Input a user can fix, bad flags included, ends in one line `error: <what and where>` on stderr
  and exit code 2, never a traceback or a usage dump; exit 0 means done. (Pretraining adds 3,
  engine/run.py's DIVERGED_EXIT_CODE; 75, engine/preemption.py's PREEMPTED_EXIT_CODE; and 76,
  engine/watchdog.py's WATCHDOG_EXIT_CODE.)
- Progress bars (tqdm, on stderr) show only when stderr is a terminal, unless `--progress` or
  `--no-progress` says otherwise, so logs and tests never see them.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import logging
import os
import shlex
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse with the house error style: one line on stderr, exit code 2."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's line breaks; leaves hidden aliases out of the option list."""

    def _format_action_invocation(self, action):
        hidden = getattr(action, "hidden_aliases", ())
        if hidden:
            action = copy.copy(action)
            action.option_strings = [o for o in action.option_strings if o not in hidden]
        return super()._format_action_invocation(action)


def parser(doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser whose help is `doc` (the command's __doc__) with its line breaks kept."""
    return OneLineParser(prog=prog, description=doc, formatter_class=_Formatter)


def flag(parser: argparse.ArgumentParser, name: str, *old: str, **kwargs) -> argparse.Action:
    """parser.add_argument(name, ...) that also accepts the earlier spellings `old`, unlisted in --help."""
    action = parser.add_argument(name, *old, **kwargs)
    action.hidden_aliases = old
    return action


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, renamed=None) -> None:
    """One flag per field of dataclass `cls`, defaulting to the field's default: --field-name (or
    renamed(field) -> (flag, older spellings)), a switch for a bool, comma-separated for a list."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        name, old = renamed(f.name) if renamed else ("--" + f.name.replace("_", "-"), ())
        if isinstance(value, bool):
            flag(parser, name, *old, dest=f.name, action="store_true", default=value)
        elif isinstance(value, list):
            flag(parser, name, *old, dest=f.name, default="", help="comma-separated")
        else:
            flag(parser, name, *old, dest=f.name, type=type(value), default=value, help=f"default {value}")


def dataclass_from_flags(cls, args: argparse.Namespace):
    """The instance of `cls` the flags of add_dataclass_flags describe (lists split at commas)."""
    defaults = cls()
    return cls(**{f.name: [x for x in getattr(args, f.name).split(",") if x]
                  if isinstance(getattr(defaults, f.name), list) else getattr(args, f.name)
                  for f in dataclasses.fields(cls)})


def add_progress(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_const", const=True, default=None,
                       help="progress bars on stderr (default: only when stderr is a terminal)")
    group.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                       help="no progress bars")


def bar_disable(progress: bool | None) -> bool | None:
    """tqdm's `disable` for a --progress choice: None (auto) lets tqdm hide bars off a terminal."""
    return None if progress is None else not progress


def step_bar(bar):
    """A `progress(step, total)` callback (downstream.finetune.train_classifier) driving a tqdm bar."""
    def progress(step: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = step
            bar.refresh()
    return progress


def command_line(prog: str | None, argv: list[str] | None) -> str:
    """The command as typed, for the files that record how they were made (manifests, results)."""
    words = [prog] if prog else ["python", sys.argv[0]]
    return " ".join(words + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])


def fail(error: Exception | str) -> int:
    """Print the one-line error for input a user can fix; returns the exit code to return."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT


def output_problem(path: str | Path, flag: str = "--out") -> str | None:
    """Why `path`, a file or directory a command is about to create, cannot be written, or None:
    a parent that is a regular file, or a nearest existing directory that is not writable (a
    read-only file system, permissions). Checked before any work, so a long job does not fail at
    its end; a disk that fills during the job is what one_line_os_errors reports."""
    path = Path(path).absolute()
    existing = path if path.exists() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            return None  # an output file that exists: writable or not, os.access below decides
        return f"{flag} {path}: cannot create it, {existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{flag} {path}: cannot create it, {existing} is not writable (read-only file system or permissions)"
    return None


def one_line_os_errors(main):
    """Wrap a command's main: a write that fails on the way (disk full, quota, read-only file system,
    permissions) is one line naming the file, exit 2, not a traceback."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            return fail(f"{where}{exc.strerror or exc} (free space, or write the output elsewhere)")
    return wrapped


def log_to_stderr(level: int = logging.INFO) -> None:
    """Progress and warnings of long jobs (data preparation) as `LEVEL message` lines on stderr."""
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
