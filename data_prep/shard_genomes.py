#!/usr/bin/env python
"""Shard genome FASTA files of many species into WebDataset tar shards (see janus_pretrain/data/prepare.py).

python data_prep/shard_genomes.py --genomes configs/genomes/bundled.yaml --out shards/bundled --window-bp 16384
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

from janus_pretrain.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
