#!/usr/bin/env python
"""`janus shard` as a script: see janus_pretrain/commands/shard.py or `--help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

from janus_pretrain.commands.shard import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
