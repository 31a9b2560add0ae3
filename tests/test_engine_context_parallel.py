"""Context parallelism in the engine (parallel.cp_size) on CPU ranks: training with each sample split
over a CP group equals training without it, it resumes exactly, and onto another cp_size.

What is checked: the gradient scale (every CP rank holds part of its sample's gradient and DeepSpeed
averages over the whole world, so the trainer scales the loss by cp_size: the recorded grad norm,
measured before clipping, would be 1/cp of the reference's otherwise; the updates would not show
it, since clipping and AdamW hide a uniform scale), the composition with ZeRO-2 and expert
parallelism (expert gradients reduced over the expert-data-parallel groups of the larger world), the
data rank (rank // cp_size: both ranks of a group must read the same sample), validation on slices,
and resume; slow: an expert-parallel group spanning CP groups, ZeRO-1, and cp 4 on 4 ranks.

Measured (fp32, this model, this machine): against the run without CP the losses differ by at most
4.8e-7 (cp 2 on 2 ranks, 4 steps: 2 ulp at loss 3) and 3.6e-7 (cp 2 x dp 2 on 4 ranks, 20 steps),
the grad norms by 1.5e-7 relative, the weights by 1.2e-7 and 2.4e-7, the validation loss by 3e-8;
cp 2 -> cp 1 continues within 2.4e-7 (losses) and 1.2e-7 (weights); the kill-and-resume is bitwise.
Without the cp_size loss scale the first test fails: grad norm 0.858 against 1.716.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine_launch import bundled_shards, logs, merged_weights, metrics, run, small_config

CLIP = 0.05  # active (grad norms ~1): the updates see only the gradient's direction, so the norm is compared
LOSS_TOL, WEIGHT_TOL = 5e-6, 2e-6  # about 10x the worst measured


def _train(out: Path, world: int, timeout: float = 300, **spec) -> dict:
    """spec: tests/engine_worker.py's (config, data, faults ...)."""
    codes = run(world, spec, out, timeout=timeout)
    assert codes == [0] * world, logs(out)
    return {"metrics": metrics(out), "weights": merged_weights(out, world), "log": (out / "log_rank0.txt").read_text()}


def _assert_same_training(got: dict, want: dict) -> None:
    assert [m["step"] for m in got["metrics"]] == [m["step"] for m in want["metrics"]]
    for a, b in zip(got["metrics"], want["metrics"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=LOSS_TOL), (a, b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5), (a, b)
        assert a["grad_norm"] > CLIP * 10
    assert set(got["weights"]) == set(want["weights"])
    assert any(".experts.3." in k for k in got["weights"])  # the second expert-parallel rank's experts
    for key, value in want["weights"].items():
        torch.testing.assert_close(got["weights"][key], value, atol=WEIGHT_TOL, rtol=0, msg=lambda m: f"{key}: {m}")


def _synthetic_config(out: Path, cp: int, ep: int) -> dict:
    return small_config(out, train={"steps": 4, "grad_clip": CLIP}, parallel={"ep_size": ep, "cp_size": cp})


def test_cp2_with_expert_parallel_2_and_zero2_trains_like_one_rank(tmp_path):
    """2 ranks = one CP group (also the expert-parallel group) against 1 rank holding whole samples:
    the same 2 samples per step, the same losses, grad norms and weights."""
    reference = _train(tmp_path / "one", 1, config=_synthetic_config(tmp_path / "one", 1, 1))
    split = _train(tmp_path / "cp2", 2, config=_synthetic_config(tmp_path / "cp2", 2, 2))
    assert "x 1 data-parallel ranks (2 ranks / cp_size 2) = 128 tokens" in split["log"]
    _assert_same_training(split, reference)
    assert split["metrics"][-1]["loss"] < split["metrics"][0]["loss"]


# ---------------------------------------------------------------- slow: 4 ranks, real data, resume

STEPS, SAVE_EVERY = 20, 10


def _real_config(out: Path, manifest: Path, cp: int) -> dict:
    # 4 samples per step on every layout: micro batch 2 x 2 data-parallel ranks; 4 slot streams
    return small_config(out, data={"manifest": str(manifest), "seq_len": 64, "num_workers": 0, "streams": 4,
                                   "shuffle_buffer": 8},
                        train={"micro_batch": 2, "grad_accum": 0, "global_batch_tokens": 4 * 64, "steps": STEPS,
                               "grad_clip": CLIP},
                        parallel={"ep_size": 2, "cp_size": cp, "zero_stage": 2},
                        checkpoint={"every": SAVE_EVERY, "keep": 3})


def _validation(out: Path) -> dict:
    lines = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines() if line.strip()]
    return lines[-1]


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    manifest = bundled_shards(tmp_path_factory)
    base = tmp_path_factory.mktemp("cp_engine")
    runs = {"manifest": manifest}
    for name, world, cp in (("dp2", 2, 1), ("cp2_dp2", 4, 2)):
        out = base / name
        runs[name] = _train(out, world, timeout=900, data="real", config=_real_config(out, manifest, cp))
        runs[name]["out"] = out
        runs[name]["validation"] = _validation(out)
    return runs


@pytest.mark.slow
def test_20_steps_cp2_dp2_ep2_zero2_equal_dp2_ep2_zero2(real_runs):
    """4 ranks (cp 2 x dp 2, ep 2) against 2 ranks (dp 2, ep 2) on the bundled genomes: the data
    rank is rank // cp_size, so both layouts train on the same samples; validation scores slices."""
    _assert_same_training(real_runs["cp2_dp2"], real_runs["dp2"])
    got, want = real_runs["cp2_dp2"]["validation"], real_runs["dp2"]["validation"]
    assert got["valid/all/loss"] == pytest.approx(want["valid/all/loss"], abs=LOSS_TOL)
    assert got["valid/all/accuracy"] == want["valid/all/accuracy"]


def _continue_from(real_runs, tmp_path: Path, world: int, cp: int) -> Path:
    """The cp 2 run's step-10 checkpoint, resumed on `world` ranks with `cp`."""
    source = real_runs["cp2_dp2"]["out"] / "checkpoints"
    out = tmp_path / f"world{world}_cp{cp}"
    shutil.copytree(source, out / "checkpoints")
    shutil.rmtree(out / "checkpoints" / f"step_{STEPS:08d}")
    (out / "checkpoints" / "latest").write_text(f"step_{SAVE_EVERY:08d}")
    codes = run(world, {"config": _real_config(out, real_runs["manifest"], cp), "data": "real"}, out, timeout=900)
    assert codes == [0] * world, logs(out)
    return out


@pytest.mark.slow
def test_killed_cp2_run_resumes_exactly(real_runs, tmp_path):
    """SIGKILL on every rank in step 13; the rerun resumes step 10 and ends bitwise like the straight run."""
    out = tmp_path / "killed"
    config = _real_config(out, real_runs["manifest"], 2)
    assert run(4, {"config": config, "data": "real", "faults": {"die_at": 13}}, out, timeout=900) != [0] * 4
    assert [m["step"] for m in metrics(out)] == list(range(1, 13))
    codes = run(4, {"config": config, "data": "real"}, out, timeout=900)
    assert codes == [0] * 4, logs(out)
    assert f"resumed from {out / 'checkpoints' / 'step_00000010'}" in logs(out)
    straight = real_runs["cp2_dp2"]
    assert [m["loss"] for m in metrics(out)] == [m["loss"] for m in straight["metrics"]]
    weights = merged_weights(out, 4)
    for key, value in straight["weights"].items():
        assert torch.equal(weights[key], value), key


@pytest.mark.slow
def test_cp2_checkpoint_resumes_on_cp1(real_runs, tmp_path):
    """cp 2 x dp 2 (4 ranks) -> cp 1 x dp 2 (2 ranks): the weights do not depend on cp, the data
    position is per data-parallel rank; steps 11-20 continue the cp 2 run within fp32 rounding."""
    out = _continue_from(real_runs, tmp_path, world=2, cp=1)
    assert "resharding from world 4 / ep 2 / ZeRO-2 / cp 2 to world 2 / ep 2 / ZeRO-2" in logs(out)
    want = real_runs["cp2_dp2"]
    got = {"metrics": metrics(out), "weights": merged_weights(out, 2)}
    assert [m["step"] for m in got["metrics"]] == list(range(SAVE_EVERY + 1, STEPS + 1))
    _assert_same_training(got, {**want, "metrics": want["metrics"][SAVE_EVERY:]})


@pytest.mark.slow
@pytest.mark.parametrize("cp_size, ep_size, zero_stage", [(2, 4, 2), (2, 2, 1), (4, 2, 2)])
def test_other_layouts_of_4_ranks_equal_dp2(real_runs, tmp_path, cp_size, ep_size, zero_stage):
    """cp 2 with ep 4: each expert-parallel group spans both CP groups (ranks 0-1 and 2-3), so the
    token all-to-all mixes slices of different samples; cp 2 with ZeRO-1 (only the optimizer
    states partitioned); cp 4 (one data-parallel rank, two accumulation steps of micro batch 2).
    Each trains 20 steps like the 2-rank dp 2 / ep 2 / ZeRO-2 run."""
    out = tmp_path / f"cp{cp_size}_ep{ep_size}_zero{zero_stage}"
    config = _real_config(out, real_runs["manifest"], cp_size)
    config["parallel"].update(ep_size=ep_size, zero_stage=zero_stage)
    _assert_same_training(_train(out, 4, timeout=900, data="real", config=config), real_runs["dp2"])
