#!/usr/bin/env python
"""Evaluate an exported model on a task suite, with baselines in the same run.

    python launch/evaluate.py --model EXPORT_DIR --tasks configs/eval/bundled.yaml --out DIR \
        [--seeds 3] [--baselines kmer,random] [--only task1,task2] [--threads N]

Per task: the pretrained model, the same architecture randomly initialised (same recipe), and a
k-mer logistic regression (k chosen on validation). Writes DIR/results.json (schema
janus-eval-results-v1) and DIR/results.md: mean and std over seeds, and pretrained - random.
Exit codes: 0 done, 2 bad input (one-line message naming the file, line and column or key).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from janus_pretrain.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
