"""The real trainer under Slurm: `sbatch launch/slurm_pretrain.sh configs/tiny.yaml` on 2 CPU tasks.

One uninterrupted run is the reference. A run that is preempted (USR1 mid-run, exit 75, requeue,
resume) and runs whose rank 1 dies by SIGKILL - once during a checkpoint save, once in the middle
of a training step - then are resubmitted, must end with the same loss at every step and bitwise
the same final checkpoint (weights, fp32 master partitions, optimizer moments) as the reference.

tiny.yaml is used as shipped except for paths, a shorter run (8 steps, seq_len 256) and a
checkpoint every 2 steps, so that the whole file runs in a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from slurm_cluster import slurm  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "slurm_pretrain.sh"
STEPS, EVERY = 8, 2
JOB_TIMEOUT = 420  # seconds; a job takes ~40 s on 2 busy cores

# Test-only fault injection, run as the job's $PYTHON: on rank KILL_RANK (first start only) SIGKILLs itself either in the middle of the checkpoint save of tag
# KILL_TAG - after DeepSpeed wrote its files, before the save is marked complete - or in the
# forward pass of optimizer step KILL_STEP (grad_accum is 1). Deterministic, unlike a kill -9
# from outside timed against a fast-moving run; the process dies the same way. STEP_SLEEP slows
# every step of a first start (not the numbers) so that a signal surely lands mid-run.
INJECT = textwrap.dedent('''
    import os, runpy, signal, sys
    from pathlib import Path
    sys.path.insert(0, os.environ["JANUS_ROOT"])
    rank = os.environ["SLURM_PROCID"]
    marks = Path(os.environ["FAULT_DIR"])

    def die(where):
        marks.mkdir(parents=True, exist_ok=True)
        (marks / "killed").write_text(where)
        os.kill(os.getpid(), signal.SIGKILL)

    if rank == os.environ.get("KILL_RANK") and not (marks / "killed").exists():
        if os.environ.get("KILL_TAG"):
            import janus_pretrain.checkpoint.training_state as ckpt
            save = ckpt.atomic_torch_save

            def dying_save(obj, path):
                if Path(path).parent.name == os.environ["KILL_TAG"] and Path(path).name.startswith("rank_"):
                    die(f"saving {path}")
                return save(obj, path)
            ckpt.atomic_torch_save = dying_save
        if os.environ.get("KILL_STEP"):
            from janus_pretrain.engine.trainer import Trainer
            forward = Trainer.forward

            def dying_forward(self, batch):
                if self.step + 1 == int(os.environ["KILL_STEP"]):
                    die(f"forward of step {self.step + 1}")
                return forward(self, batch)
            Trainer.forward = dying_forward
    if os.environ.get("STEP_SLEEP") and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
        import time
        from janus_pretrain.engine.trainer import Trainer
        plain_forward = Trainer.forward

        def slow_forward(self, batch):      # keeps the first start running while a test signals
            time.sleep(float(os.environ["STEP_SLEEP"]))
            return plain_forward(self, batch)
        Trainer.forward = slow_forward
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
''')


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    subprocess.run([sys.executable, str(REPO / "data_prep" / "shard_genomes.py"), "--genomes",
                    str(REPO / "configs" / "genomes" / "bundled.yaml"), "--out", str(out),
                    "--window-bp", "1024"], check=True, capture_output=True)
    return out


class Run:
    """One run directory: submit the sbatch script (again) into it, read its results."""

    def __init__(self, slurm, shards: Path, root: Path, **env: str):
        self.slurm, self.root = slurm, root
        root.mkdir(parents=True, exist_ok=True)
        wrapper = root / "python"
        (root / "inject.py").write_text(INJECT)
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{root / "inject.py"}" "$@"\n')
        wrapper.chmod(0o755)
        self.env = dict(slurm.env, PYTHON=str(wrapper), FAULT_DIR=str(root / "faults"),
                        JANUS_ROOT=str(REPO), JANUS_SRUN_WAIT="10", PYTHONUNBUFFERED="1", **env)
        self.env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
        self.overrides = [f"data.manifest={shards / 'manifest.json'}", "data.seq_len=256",
                          "train.global_batch_tokens=0", f"train.steps={STEPS}",
                          f"checkpoint.every={EVERY}", f"checkpoint.dir={root / 'checkpoints'}",
                          f"logging.dir={root / 'tensorboard'}", "logging.every=1"]
        self.jobs: list[str] = []

    def submit(self, *sbatch_options: str) -> str:
        sets = [a for o in self.overrides for a in ("--set", o)]
        job = self.slurm.sbatch(["--ntasks-per-node=2", "--cpus-per-task=1", "--time=60",
                                 f"--output={self.root}/slurm-%j.out", *sbatch_options,
                                 str(SCRIPT), "configs/tiny.yaml", *sets], cwd=REPO, env=self.env)
        self.jobs.append(job)
        return job

    def wait(self, job: str) -> dict:
        return self.slurm.wait_job(job, timeout=JOB_TIMEOUT)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("slurm-*.out")))

    def metrics(self) -> list[dict]:
        path = self.root / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def wait_for_step(self, step: int, timeout: float = JOB_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not any(m["step"] >= step for m in self.metrics()):
            assert time.monotonic() < deadline, f"step {step} not reached\n{self.log()}"
            time.sleep(0.2)

    def checkpoint_tensors(self, tag: str) -> dict[str, torch.Tensor]:
        """Every tensor of a checkpoint's DeepSpeed and expert files, keyed by file and path."""
        found: dict[str, torch.Tensor] = {}
        folder = self.root / "checkpoints" / tag
        for path in sorted(folder.glob("*.pt")):
            if not path.name.startswith("rank_"):  # data-loader and RNG state: checked by use
                _collect(torch.load(path, map_location="cpu", weights_only=False), path.name, found)
        return found


def _collect(obj, key: str, out: dict) -> None:
    if isinstance(obj, torch.Tensor):
        out[key] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _collect(v, f"{key}/{k}", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _collect(v, f"{key}/{i}", out)


def _final_line(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("final: ")]
    assert len(lines) == 1, log
    return lines[0]


def _assert_same_training(run: Run, reference: Run) -> None:
    got, want = run.metrics(), reference.metrics()
    assert [m["step"] for m in got] == list(range(1, STEPS + 1)), run.log()
    assert [m["loss"] for m in got] == [m["loss"] for m in want]
    assert _final_line(run.log()) == _final_line(reference.log())
    tag = f"step_{STEPS:08d}"
    a, b = run.checkpoint_tensors(tag), reference.checkpoint_tensors(tag)
    assert set(a) == set(b) and len(a) > 10
    for key in b:
        assert torch.equal(a[key], b[key]), key


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
    assert _final_line(log) == f"final: step={STEPS} loss={last:.8g}"
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
    _assert_same_training(run, reference)


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
    _assert_same_training(run, reference)


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
    _assert_same_training(run, reference)


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
