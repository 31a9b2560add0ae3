"""Elastic resume: a checkpoint written on one layout (world size, ep_size, ZeRO stage) continues
on another, against an uninterrupted run on the bundled genomes.

The reference trains 2 ranks x ep 2 for 4 steps and checkpoints after step 2. Resuming that
step-2 checkpoint on 1 rank / ep 1 (and, slow, on 4 ranks / ep 4) must give: the fp32 master
weights and AdamW moments of every parameter (dense and each expert by its global id) equal to
the checkpoint's right after resharding (it is a copy), the same samples in steps 3 and 4 (the
data stream is layout-independent, data/loader.py) and so the reference's losses, weights and
optimizer states after step 4 within fp32 rounding (only summation order differs).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from engine_launch import bundled_shards, logs, merged_weights, metrics, run, small_config
from janus_pretrain.checkpoint.layout import CheckpointDir
from janus_pretrain.checkpoint.meta import read_meta
from janus_pretrain.checkpoint.reshard import SourceCheckpoint, read_rank_files

LOSS_ATOL = 2e-5  # steps 3-4: same samples, same math, another reduction order
STATE_ATOL = 1e-6


def _config(out: Path, manifest: Path, world: int, ep: int, zero: int = 2, **train) -> dict:
    # micro batch 1, 4 samples per step on any layout; 4 slot streams so 1, 2 and 4 ranks can share them
    return small_config(out, data={"manifest": str(manifest), "seq_len": 64, "num_workers": 0, "streams": 4,
                                   "shuffle_buffer": 8},
                        train={"micro_batch": 1, "grad_accum": 0, "global_batch_tokens": 4 * 64, "steps": 4,
                               "grad_clip": 0.05, **train},
                        parallel={"ep_size": ep, "zero_stage": zero}, checkpoint={"every": 2, "keep": 3})


def optimizer_state(checkpoint_dir: Path, tag: str) -> dict[str, dict[str, torch.Tensor]]:
    folder = CheckpointDir(checkpoint_dir, 3).path(tag)
    return SourceCheckpoint(folder, read_rank_files(folder, read_meta(folder))).full_state()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    manifest = bundled_shards(tmp_path_factory)
    out = tmp_path_factory.mktemp("elastic") / "reference"
    codes = run(2, {"config": _config(out, manifest, world=2, ep=2), "data": "real"}, out)
    assert codes == [0, 0], logs(out)
    return {"out": out, "manifest": manifest, "metrics": metrics(out), "weights": merged_weights(out, 2),
            "state_2": optimizer_state(out / "checkpoints", "step_00000002"),
            "state_4": optimizer_state(out / "checkpoints", "step_00000004")}


def _resume_on(reference, tmp_path: Path, world: int, ep: int, zero: int = 2, timeout: float = 300):
    out = tmp_path / f"world{world}_ep{ep}"
    shutil.copytree(reference["out"] / "checkpoints", out / "checkpoints")
    shutil.rmtree(out / "checkpoints" / "step_00000004")
    (out / "checkpoints" / "latest").write_text("step_00000002")
    config = _config(out, reference["manifest"], world=world, ep=ep, zero=zero)
    codes = run(world, {"config": config, "data": "real"}, out, timeout=timeout)
    assert codes == [0] * world, logs(out)
    return out


def _assert_continues_like_reference(reference, out: Path, world: int) -> None:
    log = logs(out)
    assert f"resharding from world 2 / ep 2 / ZeRO-2 to world {world}" in log
    steps = metrics(out)
    assert [m["step"] for m in steps] == [3, 4]
    for got, want in zip(steps, reference["metrics"][2:]):
        assert got["loss"] == pytest.approx(want["loss"], abs=LOSS_ATOL), (got, want)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-9)
    weights = merged_weights(out, world)
    assert set(weights) == set(reference["weights"])
    for key, value in reference["weights"].items():
        torch.testing.assert_close(weights[key], value, atol=STATE_ATOL, rtol=0, msg=lambda m: f"{key}: {m}")
    state = optimizer_state(out / "checkpoints", "step_00000004")
    assert set(state) == set(reference["state_4"])
    worst = {key: max((state[n][key] - want[key]).abs().max().item() for n, want in reference["state_4"].items())
             for key in ("fp32", "exp_avg", "exp_avg_sq")}
    print(f"world {world}: largest loss difference "
          f"{max(abs(g['loss'] - w['loss']) for g, w in zip(steps, reference['metrics'][2:])):.2e}, "
          f"largest state differences {worst}")  # shown with pytest -s
    for name, want in reference["state_4"].items():
        for key in ("fp32", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[name][key], want[key], atol=STATE_ATOL, rtol=1e-5,
                                       msg=lambda m: f"{name} {key}: {m}")


def test_reference_trained_and_the_optimizer_state_is_not_trivial(reference):
    """Guards the comparisons below: moments exist for every parameter and moved between steps."""
    first, last = reference["state_2"], reference["state_4"]
    assert any(".experts.3." in name for name in first)  # rank 1's experts are in the merged state
    for name in first:
        assert first[name]["exp_avg_sq"].abs().max() > 0, name
        assert not torch.equal(first[name]["exp_avg"], last[name]["exp_avg"]), name


def test_resume_on_one_rank_and_ep_1_continues_the_two_rank_run(reference, tmp_path):
    out = _resume_on(reference, tmp_path, world=1, ep=1)
    _assert_continues_like_reference(reference, out, world=1)


# slow: the same resharding path as world 2 -> 1 (DeepSpeed's stage 1 and 2 partition alike); kept for releases
@pytest.mark.slow
def test_zero_stage_1_resumes_a_zero_stage_2_checkpoint(reference, tmp_path):
    out = _resume_on(reference, tmp_path, world=2, ep=1, zero=1)
    assert "resharding from world 2 / ep 2 / ZeRO-2 to world 2 / ep 1 / ZeRO-1" in logs(out)
    _assert_continues_like_reference(reference, out, world=2)


@pytest.mark.slow
def test_resume_on_four_ranks_and_ep_4_continues_the_two_rank_run(reference, tmp_path):
    out = _resume_on(reference, tmp_path, world=4, ep=4, timeout=600)
    _assert_continues_like_reference(reference, out, world=4)


def test_a_layout_change_that_cannot_keep_the_global_batch_is_refused_before_training(reference, tmp_path):
    out = tmp_path / "bigger_batch"
    shutil.copytree(reference["out"] / "checkpoints", out / "checkpoints")
    config = _config(out, reference["manifest"], world=1, ep=1)
    config["train"].update(global_batch_tokens=8 * 64)
    codes = run(1, {"config": config, "data": "real"}, out)
    assert codes == [2], logs(out)
    assert "keeps the global batch: set train.global_batch_tokens=256 and train.grad_accum=0" in logs(out)
    assert not (out / "metrics.jsonl").exists() or metrics(out) == []


# ---- warm start: checkpoint.init_from ----

def _warm_config(out: Path, manifest: Path, source: str, world: int = 1, ep: int = 1, seq_len: int = 128, **train):
    config = _config(out, manifest, world=world, ep=ep, **train)
    config["data"]["seq_len"] = seq_len  # the next stage of a length curriculum
    config["train"]["global_batch_tokens"] = 4 * seq_len
    config["checkpoint"]["init_from"] = source
    return config


def test_init_from_a_checkpoint_starts_step_0_from_its_master_weights(reference, tmp_path):
    """A NaN first step applies no update, so the weights after it are the initial ones: exactly
    the source's fp32 master weights, on another layout and sequence length."""
    out = tmp_path / "warm"
    source = f"{reference['out'] / 'checkpoints'}:step_00000004"
    codes = run(1, {"config": _warm_config(out, reference["manifest"], source, steps=1), "data": "real",
                    "nan": {"steps": [1]}}, out)
    assert codes == [0], logs(out)
    assert "initialised from checkpoint" in logs(out) and "step 4" in logs(out)
    assert [m["step"] for m in metrics(out)] == [1]
    weights = merged_weights(out, 1)
    for name, want in reference["state_4"].items():
        assert torch.equal(weights[name], want["fp32"]), name


# slow: warm start is in the default suite as test_init_from_a_checkpoint_starts_step_0_from_its_master_weights
@pytest.mark.slow
def test_init_from_an_export_then_a_requeue_resumes_its_own_checkpoint(reference, tmp_path):
    from janus_pretrain.checkpoint.convert import convert_to_export

    export = tmp_path / "export"
    convert_to_export(reference["out"] / "checkpoints", export)
    out = tmp_path / "warm_export"
    config = _warm_config(out, reference["manifest"], str(export), world=2, ep=2, steps=2)
    codes = run(2, {"config": config, "data": "real"}, out)
    assert codes == [0, 0], logs(out)
    assert f"initialised from export {export}" in logs(out)
    first = metrics(out)
    assert [m["step"] for m in first] == [1, 2] and first[0]["loss"] < reference["metrics"][0]["loss"] - 0.05
    config["train"]["steps"] = 3  # the job again (a requeue, or a longer run): continues its own run
    codes = run(2, {"config": config, "data": "real"}, out)
    assert codes == [0, 0], logs(out)
    assert "not used: resuming this run's own checkpoint" in logs(out)
    assert [m["step"] for m in metrics(out)] == [1, 2, 3]


def test_init_from_another_architecture_is_one_error_listing_the_keys(reference, tmp_path):
    out = tmp_path / "wider"
    config = _warm_config(out, reference["manifest"], str(reference["out"] / "checkpoints"))
    config["model"]["d_model"] = 24
    codes = run(1, {"config": config, "data": "real"}, out)
    assert codes == [2], logs(out)
    assert "holds another model: model.d_model: 16 there, 24 here" in logs(out)


def test_a_damaged_partition_file_stops_a_resharding_resume_with_one_line(reference, tmp_path):
    """On another layout the ranks share the digest checks of every file of the checkpoint."""
    out = tmp_path / "damaged"
    shutil.copytree(reference["out"] / "checkpoints", out / "checkpoints")
    zero_file = sorted((out / "checkpoints" / "step_00000002").glob("*optim_states.pt"))[-1]
    zero_file.write_bytes(zero_file.read_bytes()[:-100])
    config = _config(out, reference["manifest"], world=1, ep=1)
    config["checkpoint"]["resume"] = "step_00000002"
    codes = run(1, {"config": config, "data": "real"}, out)
    assert codes == [2], logs(out)
    assert f"{zero_file.name}" in logs(out) and "DAMAGED" in logs(out)
