"""launch/slurm_pretrain.sh on a real single-node Slurm cluster (tests/slurm_cluster.py).

These tests swap the trainer for a small stand-in (JANUS_ROOT points at a directory whose
launch/pretrain.py does a gloo all-reduce and reacts to signals like the trainer does), so that
the script's own duties - rendezvous from the Slurm environment, argument passing, signal
forwarding, requeue on exit 75 and only then - are checked in seconds. The tests with the real
trainer (including `scancel --signal=USR1 JOB`, which reaches the ranks without the shell) are in
tests/test_slurm_training.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slurm_cluster import slurm  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "slurm_pretrain.sh"
PREEMPTED = 75

# Stand-in trainer: ranks from SLURM_*, rendezvous from MASTER_ADDR/PORT, one record per rank and
# restart, then behaviour chosen by STUB_MODE.
STUB = textwrap.dedent('''
    import json, os, signal, sys, time
    from pathlib import Path
    import torch
    import torch.distributed as dist

    stop = []
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, lambda s, f: stop.append(signal.Signals(s).name))
    rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    dist.init_process_group("gloo", rank=rank, world_size=world)   # env:// rendezvous
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    out = Path(os.environ["STUB_OUT"])
    record = dict(rank=rank, world=world, local_rank=int(os.environ["SLURM_LOCALID"]),
                  total=total.item(), argv=sys.argv[1:], restart=restart,
                  master=[os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]],
                  omp=os.environ.get("OMP_NUM_THREADS"), torch_rank=os.environ.get("RANK"))
    (out / f"rank{rank}.restart{restart}.ready").write_text(json.dumps(record))
    mode = os.environ.get("STUB_MODE", "once")
    if mode == "crash":                    # rank 1 fails; rank 0 would wait for an hour
        if rank == 1:
            os._exit(3)            # as an uncaught crash would, minus gloo teardown noise
        time.sleep(3600)
    if mode == "wait_for_signal" and restart == 0:
        while not stop:
            time.sleep(0.1)
        record["stop"] = stop
        (out / f"rank{rank}.restart{restart}.stopped").write_text(json.dumps(record))
        sys.exit(75)
    dist.destroy_process_group()
''')


@pytest.fixture
def stub_job(slurm, tmp_path):
    """Submit the script with the stand-in trainer; returns submit(mode, *args) -> job id."""
    (tmp_path / "launch").mkdir()
    (tmp_path / "launch" / "pretrain.py").write_text(STUB)
    (tmp_path / "run.yaml").write_text("train: {steps: 1}\n")
    out = tmp_path / "out"
    out.mkdir()

    def submit(mode: str, *args: str) -> str:
        env = dict(slurm.env, JANUS_ROOT=str(tmp_path), PYTHON=sys.executable,
                   STUB_OUT=str(out), STUB_MODE=mode, RANK="7",  # stale RANK must not leak
                   JANUS_SRUN_WAIT="5")
        # --time long enough that the script's --signal=B:USR1@300 does not fire
        return slurm.sbatch(["--ntasks-per-node=2", "--cpus-per-task=1", "--time=60",
                             str(SCRIPT), "run.yaml", *args], cwd=tmp_path, env=env)

    submit.out = out
    submit.log = lambda job_id: (tmp_path / f"janus-pretrain-{job_id}.out").read_text()
    return submit


def _wait_files(paths: list[Path], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: missing {[str(p) for p in paths if not p.exists()]}")
        time.sleep(0.2)


def _records(out: Path, suffix: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"*{suffix}"))]


def test_ranks_rendezvous_from_slurm_environment(slurm, stub_job):
    job = stub_job("once", "--set", "train.steps=3", "--resume", "none")
    info = slurm.wait_job(job, timeout=120)
    log = stub_job.log(job)
    assert info["JobState"] == "COMPLETED", log
    recs = _records(stub_job.out, ".ready")
    assert sorted(r["rank"] for r in recs) == [0, 1]
    for r in recs:
        assert r["world"] == 2 and r["local_rank"] == r["rank"]   # one node, two tasks
        assert r["total"] == 1.0 + 2.0                            # the all-reduce saw both ranks
        assert r["argv"] == ["--config", "run.yaml", "--set", "train.steps=3", "--resume", "none"]
        assert r["omp"] == "1"                                    # from --cpus-per-task
        assert r["torch_rank"] is None                            # stale RANK unset by the script
        assert r["master"][0] == slurm.node
        assert int(r["master"][1]) == 15000 + int(job) % 15000    # deterministic from the job id


def test_pre_timeout_signal_requeues_and_reruns(slurm, stub_job):
    job = stub_job("wait_for_signal")
    out = stub_job.out
    _wait_files([out / f"rank{r}.restart0.ready" for r in (0, 1)], 120, "first start")
    # what --signal=B:USR1@... does: the batch shell gets USR1 and forwards it through srun
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=slurm.env, check=True)
    info = slurm.wait_job(job, timeout=180)
    log = stub_job.log(job)
    assert info["JobState"] == "COMPLETED", log
    assert info["Restarts"] == "1", log
    stopped = _records(out, ".stopped")
    assert [r["stop"] for r in stopped] == [["SIGUSR1"], ["SIGUSR1"]]  # every rank got it
    rerun = _records(out, ".restart1.ready")
    assert [r["total"] for r in rerun] == [3.0, 3.0]    # same job id, same port: rendezvous again
    assert "requeueing job" in log


def test_scancel_is_not_undone_by_a_requeue(slurm, stub_job):
    job = stub_job("wait_for_signal")
    _wait_files([stub_job.out / f"rank{r}.restart0.ready" for r in (0, 1)], 120, "first start")
    subprocess.run(["scancel", job], env=slurm.env, check=True)
    # the trainer still saves and exits 75 on the TERM; the script must see the cancel
    _wait_files([stub_job.out / f"rank{r}.restart0.stopped" for r in (0, 1)], 60, "TERM handled")
    deadline = time.monotonic() + 60
    while "not requeueing" not in stub_job.log(job):
        assert time.monotonic() < deadline, stub_job.log(job)
        time.sleep(0.5)
    info = slurm.wait_job(job, timeout=60)
    assert (info["JobState"], info["Restarts"]) == ("CANCELLED", "0"), stub_job.log(job)


def test_a_failing_rank_ends_the_job_without_requeue(slurm, stub_job):
    job = stub_job("crash")
    info = slurm.wait_job(job, timeout=120)   # rank 0 alone would sleep for an hour
    log = stub_job.log(job)
    assert info["JobState"] == "FAILED", log
    assert info["Restarts"] == "0", log
    assert "task 1: Exited with exit code 3" in log, log
