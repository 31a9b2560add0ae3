"""Conventions every command-line script shares (launch/*.py, data_prep/*.py, python -m
janus_pretrain.memory), so that each script holds only its own flags and its call into the package.

The scripts stay files because launchers need them by path (`deepspeed launch/pretrain.py`,
`srun python launch/pretrain.py`, launch/slurm_pretrain.sh) and a fresh clone runs them without
installing; that is also why each one still puts the repository root on sys.path itself (it has
to, before it can import this module).

- `--help` shows the script's docstring verbatim: it is the script's manual.
- Input a user can fix ends in one line `error: <what and where>` on stderr and exit code 2, never
  a traceback; exit 0 means done. (Pretraining adds 3 and 75: engine/run.py.)
"""
from __future__ import annotations

import argparse
import logging
import sys

EXIT_BAD_INPUT = 2


def parser(doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser whose help is `doc` (the script's __doc__) with its line breaks kept."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def fail(error: Exception | str) -> int:
    """Print the one-line error for input a user can fix; returns the exit code to return."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT


def log_to_stderr(level: int = logging.INFO) -> None:
    """Progress and warnings of long jobs (data preparation) as `LEVEL message` lines on stderr."""
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
