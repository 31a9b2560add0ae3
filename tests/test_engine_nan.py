"""NaN/inf losses: the step is skipped on every rank (no update), counted, and the run stops with a
clear message after train.max_bad_steps consecutive bad steps. The NaN appears on rank 1 only."""
from __future__ import annotations

import json

import pytest
import torch

from engine_launch import logs, merged_weights, metrics, run, small_config
from janus_pretrain.checkpoint.layout import tag_for_step
from janus_pretrain.engine.run import DIVERGED_EXIT_CODE


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nan")
    config = small_config(out, train={"steps": 8, "max_bad_steps": 3}, parallel={"ep_size": 2},
                          checkpoint={"every": 1, "keep": 10})
    codes = run(2, {"config": config, "nan": {"steps": [2, 4, 5, 6, 7], "rank": 1}, "weights_every_step": True}, out)
    return out, codes


def test_bad_steps_are_skipped_counted_and_stop_the_run(nan_run):
    out, codes = nan_run
    assert codes == [DIVERGED_EXIT_CODE] * 2, logs(out)
    steps = metrics(out)
    assert [(m["step"], m["skipped"]) for m in steps] == [
        (1, False), (2, True), (3, False), (4, True), (5, True), (6, True)]  # stops at 3 in a row
    log = (out / "log_rank0.txt").read_text()
    assert "3 consecutive steps with NaN/inf loss (train.max_bad_steps=3)" in log
    assert "4 in total" in log
    summary = json.loads((out / "run_summary.json").read_text())  # written on this agreed ending too
    assert summary["ended"] == "diverged" and summary["steps"] == 6 and summary["skipped_steps"] == 4
    assert "ended            diverged" in log


def test_skipped_step_leaves_every_weight_unchanged_on_every_rank(nan_run):
    out, _ = nan_run
    before, after_bad, after_good = (merged_weights(out, 2, step) for step in (1, 2, 3))
    assert any(".experts.3." in k for k in before)
    for key in before:
        assert torch.equal(before[key], after_bad[key]), key
    assert any(not torch.equal(after_bad[k], after_good[k]) for k in before)  # the next good step did update


def test_no_checkpoint_is_written_inside_a_streak_of_bad_steps(nan_run):
    """checkpoint.every=1: steps 1 and 3 were good and saved; 2, 4, 5 were inside NaN streaks."""
    out, _ = nan_run
    folder = out / "checkpoints"
    saved = sorted(p.name for p in folder.glob("step_*"))
    assert saved == [tag_for_step(1), tag_for_step(3)], saved
    assert (folder / "latest").read_text().strip() == tag_for_step(3)
    assert "not saving at step 4, inside a streak of 1 NaN/inf steps" in (out / "log_rank0.txt").read_text()
