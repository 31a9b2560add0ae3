"""Exact resume and preemption on 2 CPU ranks (ZeRO-2, expert parallel 2, fp32).

A run stopped after N steps (preemption flag or a real SIGUSR1) and resumed continues exactly as
an uninterrupted run: identical loss at every step and bitwise identical final weights.
"""
from __future__ import annotations

import json

import signal
import time
from pathlib import Path

import pytest
import torch

from engine_launch import logs, merged_weights, metrics, run, small_config, start, wait
from janus_pretrain.checkpoint.layout import CheckpointDir, tag_for_step
from janus_pretrain.engine.preemption import PREEMPTED_EXIT_CODE

STEPS = 8


def _config(out: Path) -> dict:
    return small_config(out, train={"steps": STEPS}, parallel={"ep_size": 2}, checkpoint={"every": 3, "keep": 2})


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    codes = run(2, {"config": _config(out)}, out)
    assert codes == [0, 0], logs(out)
    return {"metrics": metrics(out), "weights": merged_weights(out, 2), "log": (out / "log_rank0.txt").read_text(),
            "checkpoints": out / "checkpoints"}


def _assert_identical(straight: dict, out: Path) -> None:
    resumed = metrics(out)
    assert [m["step"] for m in resumed] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in resumed] == [m["loss"] for m in straight["metrics"]]
    weights = merged_weights(out, 2)
    assert set(weights) == set(straight["weights"])
    for key, value in straight["weights"].items():
        assert torch.equal(value, weights[key]), key


def test_preempted_then_resumed_run_is_identical_to_straight_run(straight, tmp_path):
    # only rank 0 sees the request: rank 1 must still stop, save and exit 75 at the same step
    codes = run(2, {"config": _config(tmp_path), "preempt_at": 4}, tmp_path)
    assert codes == [PREEMPTED_EXIT_CODE] * 2, logs(tmp_path)
    ckpts = CheckpointDir(tmp_path / "checkpoints", keep=2)
    assert ckpts.latest() == tag_for_step(4)
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2, 3, 4]
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["ended"] == "preempted" and summary["steps"] == 4 and "step_00000004" in summary["locations"]["checkpoints"]

    codes = run(2, {"config": _config(tmp_path)}, tmp_path)
    assert codes == [0, 0], logs(tmp_path)
    assert "resumed from" in (tmp_path / "log_rank0.txt").read_text()
    assert json.loads((tmp_path / "run_summary.json").read_text())["ended"] == "finished"
    _assert_identical(straight, tmp_path)
    # keep 2 (every 3 steps): step_3 went; the resumed-from step_4 stays protected during this run
    assert ckpts.latest() == tag_for_step(STEPS)
    assert ckpts.tags() == [tag_for_step(4), tag_for_step(6), tag_for_step(8)]


def test_sigusr1_to_one_rank_saves_exits_75_and_resume_continues_identically(straight, tmp_path):
    procs = start(2, {"config": _config(tmp_path), "step_sleep": 0.5}, tmp_path)
    metrics_file = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if metrics_file.is_file() and len(metrics_file.read_text().splitlines()) >= 2:
            break
        assert all(p.poll() is None for p in procs), logs(tmp_path)
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGUSR1)  # the pre-timeout signal reaches one rank first
    codes = wait(procs, tmp_path)
    assert codes == [PREEMPTED_EXIT_CODE] * 2, logs(tmp_path)
    stopped = len(metrics(tmp_path))
    assert 2 <= stopped < STEPS
    assert CheckpointDir(tmp_path / "checkpoints", keep=2).latest() == tag_for_step(stopped)

    codes = run(2, {"config": _config(tmp_path)}, tmp_path)
    assert codes == [0, 0], logs(tmp_path)
    _assert_identical(straight, tmp_path)


def test_final_line_reports_last_step_and_loss(straight):
    last = straight["metrics"][-1]
    assert f"final: step={STEPS} loss={last['loss']:.8g}" in straight["log"]


def _fp32_from_zero_partitions(folder: Path, world_size: int) -> dict:
    """The recipe in janus_pretrain/checkpoint/layout.py's docstring, followed literally."""
    pieces: dict[tuple, dict[int, torch.Tensor]] = {}  # (group index, ep_rank or None) -> {partition_id: flat}
    layouts = {}
    for rank in range(world_size):
        own = torch.load(folder / f"rank_{rank}.pt", weights_only=False)
        zero = torch.load(folder / own["zero_file"], weights_only=False)["optimizer_state_dict"]
        for i, group in enumerate(own["zero_layout"]):
            key = (i, own["ep_rank"] if group["kind"] == "moe" else None)
            layouts[key] = group
            pieces.setdefault(key, {})[group["partition_id"]] = zero["single_partition_of_fp32_groups"][i]
    weights = {}
    for key, group in layouts.items():
        parts = pieces[key]
        assert sorted(parts) == list(range(group["partition_count"]))
        flat = torch.cat([parts[p] for p in sorted(parts)])
        numels = [torch.Size(shape).numel() for _, shape in group["params"]]
        assert flat.numel() == sum(numels)  # saved partitions carry no padding
        for (name, shape), piece in zip(group["params"], flat.split(numels)):
            weights[name] = piece.view(shape)
    return weights


def test_zero_partitions_and_layout_rebuild_every_named_weight(straight, tmp_path):
    """What the export converter does: named fp32 weights from ZeRO-2 partitions of all ranks."""
    folder = Path(straight["checkpoints"]) / tag_for_step(STEPS)
    rebuilt = _fp32_from_zero_partitions(folder, 2)
    assert set(rebuilt) == set(straight["weights"])
    for name, value in straight["weights"].items():
        assert torch.equal(rebuilt[name], value), name
