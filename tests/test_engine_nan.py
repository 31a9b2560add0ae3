"""NaN/inf losses: the step is skipped on every rank (no update), counted, and the run stops with a
clear message after train.max_bad_steps consecutive bad steps. The NaN appears on rank 1 only."""
from __future__ import annotations

import pytest
import torch

from engine_launch import logs, metrics, run, small_config
from janus_pretrain.checkpoint.layout import tag_for_step
from janus_pretrain.engine.run import DIVERGED_EXIT_CODE


def _saved_weights(folder) -> dict:
    """Module weights of a checkpoint: rank 0's dense part + both expert-parallel expert files."""
    state = torch.load(folder / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    weights = {k: v for k, v in state.items() if ".experts." not in k}
    for ep_rank in (0, 1):
        weights.update(torch.load(folder / f"experts_ep{ep_rank}.pt", weights_only=True))
    return weights


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nan")
    config = small_config(out, train={"steps": 8, "max_bad_steps": 3}, parallel={"ep_size": 2},
                          checkpoint={"every": 1, "keep": 10})
    codes = run(2, {"config": config, "nan": {"steps": [2, 4, 5, 6, 7], "rank": 1}}, out)
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


def test_skipped_step_leaves_every_weight_unchanged_on_every_rank(nan_run):
    out, _ = nan_run
    before = _saved_weights(out / "checkpoints" / tag_for_step(1))
    after_bad = _saved_weights(out / "checkpoints" / tag_for_step(2))
    after_good = _saved_weights(out / "checkpoints" / tag_for_step(3))
    assert any(".experts.3." in k for k in before)
    for key in before:
        assert torch.equal(before[key], after_bad[key]), key
    assert any(not torch.equal(after_bad[k], after_good[k]) for k in before)  # the next good step did update
