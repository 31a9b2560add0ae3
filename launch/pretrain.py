#!/usr/bin/env python
"""`janus pretrain` as a script path, for launchers (deepspeed, torchrun, srun): see
janus_pretrain/commands/pretrain.py or `python launch/pretrain.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

from janus_pretrain.commands.pretrain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
