"""Probes during pretraining (eval.suite / eval.every) on 2 CPU ranks with expert parallelism 2:
the losses and final weights are bitwise those of the same run without probes, and the probe
metrics reach metrics.jsonl as probe/<task>/<metric>."""
from __future__ import annotations

import math

import torch

from engine_launch import logs, merged_weights, metrics, run, small_config
from eval_fixtures import write_suite

STEPS = 4


def _run(out, eval_section=None):
    sections = {"train": {"steps": STEPS}, "parallel": {"ep_size": 2}}
    if eval_section:
        sections["eval"] = eval_section
    codes = run(2, {"config": small_config(out, **sections)}, out)
    assert codes == [0, 0], logs(out)
    return metrics(out), merged_weights(out, 2)


def test_probes_do_not_change_the_training_trajectory(tmp_path):
    suite = write_suite(tmp_path / "suite", n=24, length=24, regression=False)
    plain, plain_weights = _run(tmp_path / "plain")
    probed, probed_weights = _run(tmp_path / "probed", {"suite": str(suite), "every": 2, "max_examples": 16})
    steps = [m for m in probed if "loss" in m]
    probes = [m for m in probed if "loss" not in m]
    assert [m["loss"] for m in steps] == [m["loss"] for m in plain]
    assert len(plain) == STEPS
    for key, value in plain_weights.items():
        assert torch.equal(value, probed_weights[key]), key
    assert [p["step"] for p in probes] == [2, 4]
    for record in probes:
        for key in ("probe/motif/accuracy", "probe/motif/mcc", "probe/motif/auroc", "probe/snv/auroc"):
            assert key in record and record[key] is not None and math.isfinite(record[key]), (key, record)
        assert 0.0 <= record["probe/motif/accuracy"] <= 1.0
