"""The real trainer under Slurm: `sbatch launch/slurm_pretrain.sh configs/tiny.yaml` on 2 CPU tasks.

One uninterrupted run is the reference. A run that is preempted (USR1 mid-run, exit 75, requeue,
resume) and runs whose rank 1 dies by SIGKILL - once during a checkpoint save, once in the middle
of a training step - then are resubmitted, must end with the same loss at every step and bitwise
the same final checkpoint (weights, fp32 master partitions, optimizer moments) as the reference.

tiny.yaml is used as shipped except for paths, a shorter run (8 steps, seq_len 256) and a
checkpoint every 2 steps, so that the whole file runs in a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from slurm_cluster import slurm  # noqa: F401  (the session fixture)
from slurm_runs import EVERY, STEPS, Run, assert_same_training, final_line, shards  # noqa: F401

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def reference(slurm, shards, tmp_path_factory) -> Run:
    run = Run(slurm, shards, tmp_path_factory.mktemp("reference"))
    info = run.wait(run.submit())
    assert info["JobState"] == "COMPLETED", run.log()
    return run


def test_tiny_config_trains_on_two_slurm_tasks(reference):
    log, metrics = reference.log(), reference.metrics()
    assert "2 tasks on 1 node(s)" in log
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    first, last = metrics[0]["loss"], metrics[-1]["loss"]
    assert last < 0.85 * first, metrics               # real yeast/fly/phage DNA: it learns
    assert final_line(log) == f"final: step={STEPS} loss={last:.8g}"
    ckpts = reference.root / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == f"step_{STEPS:08d}"
    assert (ckpts / f"step_{STEPS:08d}" / "COMPLETE").is_file()
    weights = reference.checkpoint_tensors(f"step_{STEPS:08d}")
    assert any("experts" in k for k in weights)        # expert-parallel shards of both EP ranks


def test_preempted_job_requeues_resumes_and_matches_uninterrupted_run(slurm, shards, reference,
                                                                     tmp_path):
    run = Run(slurm, shards, tmp_path, STEP_SLEEP="0.5")
    job = run.submit()
    run.wait_for_step(3)
    # USR1 straight to the ranks (what Slurm does with --signal=USR1@T without "B:")
    subprocess.run(["scancel", "--signal=USR1", job], env=slurm.env, check=True)
    info = run.wait(job)
    log = run.log()
    assert info["JobState"] == "COMPLETED", log
    assert info["Restarts"] == "1", log                  # requeued exactly once
    assert "srun exited with 75" in log and "requeueing job" in log
    stopped = re.search(r"preempted \(SIGUSR1\) after step (\d+)", log)
    assert stopped and 3 <= int(stopped.group(1)) < STEPS, log
    tag = f"step_{int(stopped.group(1)):08d}"
    assert f"resumed from {tmp_path / 'checkpoints' / tag} " in log
    assert_same_training(run, reference)


# slow: tests/test_engine_checkpoint.py kills a save half way without Slurm in the default suite
@pytest.mark.slow
def test_sigkill_during_checkpoint_save_keeps_previous_checkpoint_and_resume_matches(
        slurm, shards, reference, tmp_path):
    dying_tag = f"step_{2 * EVERY:08d}"
    run = Run(slurm, shards, tmp_path, KILL_RANK="1", KILL_TAG=dying_tag)
    info = run.wait(run.submit())
    assert (tmp_path / "faults" / "killed").read_text().startswith("saving "), run.log()
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", run.log()  # a crash: no requeue
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / dying_tag).is_dir() and not (ckpts / dying_tag / "COMPLETE").exists()
    assert (ckpts / "latest").read_text().strip() == f"step_{EVERY:08d}"   # the previous one

    run.wait(run.submit())                               # the user resubmits
    assert f"resumed from {ckpts / f'step_{EVERY:08d}'}" in run.log()
    assert_same_training(run, reference)


# slow: the kill-during-save test above covers a failed job resubmitted and matching (a harder stop)
@pytest.mark.slow
def test_sigkill_of_a_rank_mid_training_then_resume_matches(slurm, shards, reference, tmp_path):
    step = 2 * EVERY + 1                                 # between two checkpoints
    run = Run(slurm, shards, tmp_path, KILL_RANK="1", KILL_STEP=str(step))
    info = run.wait(run.submit())
    assert (tmp_path / "faults" / "killed").read_text() == f"forward of step {step}", run.log()
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", run.log()
    assert [m["step"] for m in run.metrics()] == list(range(1, step))

    run.wait(run.submit())
    ckpts = tmp_path / "checkpoints"
    assert f"resumed from {ckpts / f'step_{2 * EVERY:08d}'}" in run.log()
    assert_same_training(run, reference)


# slow: the watchdog's exit and message are tested in the default suite without Slurm
# (tests/test_checkpoint_integrity.py), and the requeue-and-resume path by the preemption test above
@pytest.mark.slow
def test_a_stalled_rank_ends_the_job_with_76_which_requeues_and_resumes(slurm, shards, reference, tmp_path):
    """A rank stopped mid-step (SIGSTOP: hung, not dead) blocks the other in a collective; its
    watchdog names the stalled rank and exits 76, srun ends the step, the script requeues, and
    the requeued job resumes from the last checkpoint and ends like the uninterrupted run."""
    step = 2 * EVERY + 1
    run = Run(slurm, shards, tmp_path, KILL_RANK="1", STALL_STEP=str(step))
    run.overrides.append("train.watchdog_s=10")
    info = run.wait(run.submit())
    log = run.log()
    assert (tmp_path / "faults" / "stalled").read_text() == f"forward of step {step}", log
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log
    assert "watchdog (rank 0): rank 1 has not responded" in log and "ranks [0] wait for it" in log
    # srun reports the signal of the stopped rank it killed; the watchdog's note makes it a 76
    assert "a rank's watchdog ended the job (exit 76" in log and "requeueing job" in log
    assert f"resumed from {tmp_path / 'checkpoints' / f'step_{2 * EVERY:08d}'}" in log
    assert_same_training(run, reference)


@pytest.mark.slow
def test_time_limit_signal_from_sbatch_directive_saves_and_requeues(slurm, shards, tmp_path):
    """The real path: Slurm itself sends USR1 to the batch shell before the time limit."""
    run = Run(slurm, shards, tmp_path)
    run.overrides = [o for o in run.overrides if not o.startswith(("train.steps", "checkpoint.every"))]
    run.overrides += ["train.steps=100000", "checkpoint.every=100000"]  # still training at the signal
    # 3 min limit, USR1 100 s before it; Slurm may deliver it up to a minute early
    job = run.submit("--time=3", "--signal=B:USR1@100")
    deadline = time.monotonic() + 400
    while "resumed from" not in run.log():
        assert time.monotonic() < deadline, run.log()
        time.sleep(1)
    log = run.log()
    assert int(slurm.job(job)["Restarts"]) >= 1, log
    subprocess.run(["scancel", job], env=slurm.env, check=True)
    slurm.wait_job(job, timeout=120)
    assert "SIGUSR1: asking the trainer" in log and "preempted (SIGUSR1)" in log
    assert "srun exited with 75" in log and "requeueing job" in log
