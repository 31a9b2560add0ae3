"""launch/slurm_pretrain.sh across two nodes: the real trainer on the two-node test cluster.

The cluster (tests/slurm_cluster.py, fixture `slurm2`) runs two slurmd on this machine, each in
UTS and mount namespaces of its own: nodes janus-n1 (127.0.0.2) and janus-n2 (127.0.0.3), each
with its own hostname and its own view of /etc/hosts. A job with --nodes=2 --ntasks-per-node=1
thus has its two ranks on different nodes: rank 1 reaches rank 0 through MASTER_ADDR=janus-n1
resolved on its own node, and gloo connects the ranks over the nodes' addresses. The nodes share
one network namespace, so a wrong MASTER_ADDR would still connect: each rank records where it
ran and what it was given (tests/slurm_runs.py), and that is checked.

- 2 nodes x 1 task trains configs/tiny.yaml (made small as in tests/slurm_runs.py) to the end
  with the same loss at every step and bitwise the same final checkpoint as 1 node x 2 tasks;
- a 2-node job stopped by a preemption signal and resubmitted on 1 node x 1 task (expert
  parallelism 1, same global batch) reshards its checkpoint to the smaller world and continues
  with the uninterrupted run's losses (within fp32 summation-order noise).
"""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from slurm_cluster import slurm2  # noqa: F401  (the session fixture)
from slurm_runs import JOB_TIMEOUT, STEPS, Run, assert_same_training, final_line, shards  # noqa: F401

pytestmark = pytest.mark.slurm

# The global batch is fixed in tokens so that grad_accum follows the world size: 2 samples x 256
# bp x 2 ranks, i.e. grad_accum 1 on two ranks and 2 on one.
SAME_GLOBAL_BATCH = ["train.global_batch_tokens=1024", "train.grad_accum=0"]
LOSS_ATOL = 2e-5  # after a reshard: same samples, same math, another reduction order (measured 1.2e-7)


def _run(slurm2, shards, root, **env) -> Run:
    run = Run(slurm2, shards, root, **env)
    run.overrides = [o for o in run.overrides if not o.startswith("train.global_batch_tokens")]
    run.overrides += SAME_GLOBAL_BATCH
    return run


@pytest.fixture(scope="module")
def one_node(slurm2, shards, tmp_path_factory) -> Run:
    """The reference: 1 node x 2 tasks, on the same cluster."""
    run = _run(slurm2, shards, tmp_path_factory.mktemp("one_node"))
    info = run.wait(run.submit(nodes=1, tasks_per_node=2))
    assert info["JobState"] == "COMPLETED", run.log()
    return run


def test_two_nodes_one_task_each_rendezvous_and_match_one_node(slurm2, shards, one_node, tmp_path):
    run = _run(slurm2, shards, tmp_path)
    job = run.submit(nodes=2, tasks_per_node=1)
    info = run.wait(job)
    log = run.log()
    assert info["JobState"] == "COMPLETED", log
    assert "2 tasks on 2 node(s) (janus-n[1-2])" in log, log
    assert "x 1 accumulation x 2 ranks = 1024 tokens" in log, log     # world size 2
    ranks = run.ranks(job)
    assert [r["SLURM_PROCID"] for r in ranks] == ["0", "1"], ranks
    assert [r["SLURMD_NODENAME"] for r in ranks] == ["janus-n1", "janus-n2"], ranks
    assert [r["hostname"] for r in ranks] == ["janus-n1", "janus-n2"], ranks  # really apart
    assert [r["SLURM_NODEID"] for r in ranks] == ["0", "1"]
    assert [r["SLURM_LOCALID"] for r in ranks] == ["0", "0"]             # first rank of its node
    assert {r["MASTER_ADDR"] for r in ranks} == {"janus-n1"}             # rank 0's node
    assert len({r["MASTER_PORT"] for r in ranks}) == 1
    # the one-node run placed both ranks on one node
    assert {r["SLURMD_NODENAME"] for r in one_node.ranks(one_node.jobs[0])} == {slurm2.node}
    assert_same_training(run, one_node)


# slow: test_a_job_requeued_onto_fewer_nodes_... covers the same 2 -> 1 node resharding through Slurm's requeue
@pytest.mark.slow
def test_two_node_job_preempted_then_resubmitted_on_one_node_reshards_and_continues(
        slurm2, shards, one_node, tmp_path):
    # JANUS_MAX_REQUEUES=0: the stopped job ends instead of requeueing onto 2 nodes again; the
    # user resubmits it on what is left
    run = _run(slurm2, shards, tmp_path, STEP_SLEEP="0.5", JANUS_MAX_REQUEUES="0")
    first = run.submit(nodes=2, tasks_per_node=1)
    run.wait_for_step(3)
    subprocess.run(["scancel", "--signal=USR1", first], env=slurm2.env, check=True)
    info = run.wait(first)
    log = run.log()
    assert "srun exited with 75" in log and "not requeueing" in log, log
    assert info["Restarts"] == "0", log
    stopped = re.search(r"preempted \(SIGUSR1\) after step (\d+)", log)
    assert stopped and 3 <= int(stopped.group(1)) < STEPS, log
    saved = int(stopped.group(1))

    del run.env["STEP_SLEEP"]
    run.overrides.append("parallel.ep_size=1")      # the expert-parallel size must divide world 1
    second = run.submit(nodes=1, tasks_per_node=1)
    info = run.wait(second)
    log = run.log()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log
    assert "1 tasks on 1 node(s)" in log
    assert "x 2 accumulation x 1 ranks = 1024 tokens" in log, log     # same global batch
    assert f"resumed from {tmp_path / 'checkpoints' / f'step_{saved:08d}'}" in log, log
    assert "resharding from world 2 / ep 2 / ZeRO-2 to world 1 / ep 1 / ZeRO-2" in log, log
    # the same samples in every step and the full training state carried over: up to the stop
    # the losses are the 1-node-x-2 run's exactly, after it within fp32 summation-order noise
    # (another batch or a lost optimizer state moves the loss by 1e-2 and more)
    got, want = run.metrics(), one_node.metrics()
    assert [m["step"] for m in got] == list(range(1, STEPS + 1)), log
    assert [m["loss"] for m in got[:saved]] == [m["loss"] for m in want[:saved]]
    for g, w in zip(got[saved:], want[saved:]):
        assert g["loss"] == pytest.approx(w["loss"], abs=LOSS_ATOL), (g, w)
    assert final_line(log) == f"final: step={STEPS} loss={got[-1]['loss']:.8g}"
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == f"step_{STEPS:08d}"
    assert (ckpts / f"step_{STEPS:08d}" / "COMPLETE").is_file()


# slow: resharding onto fewer ranks is in the default suite as tests/test_engine_elastic.py (one rank, ep 1)
@pytest.mark.slow
def test_a_job_requeued_onto_fewer_nodes_reshards_and_continues(slurm2, shards, one_node, tmp_path):
    """Slurm's own requeue with another node count: a 2-node job is stopped (USR1) and requeues
    itself while its second node is drained; the pending job is changed to one node (what an
    operator does with `scontrol update`), comes back on one node under the same job id and
    reshards world 2 -> 1 (ep_size 1 divides both)."""
    run = _run(slurm2, shards, tmp_path, STEP_SLEEP="0.5")
    run.overrides.append("parallel.ep_size=1")
    job = run.submit(nodes=2, tasks_per_node=1)
    run.wait_for_step(3)
    assert "2 tasks on 2 node(s)" in run.log(), run.log()
    scontrol = lambda *args: subprocess.run(["scontrol", *args], env=slurm2.env, check=True)  # noqa: E731
    try:
        scontrol("update", "NodeName=janus-n2", "State=DRAIN", "Reason=janus-test")
        subprocess.run(["scancel", "--signal=USR1", job], env=slurm2.env, check=True)
        deadline = time.monotonic() + JOB_TIMEOUT
        while not (slurm2.job(job)["JobState"] == "PENDING" and slurm2.job(job)["Restarts"] == "1"):
            assert time.monotonic() < deadline, run.log()
            time.sleep(0.5)
        scontrol("update", f"JobId={job}", "NumTasks=1")
        scontrol("update", f"JobId={job}", "NumNodes=1")
        info = run.wait(job)
    finally:
        scontrol("update", "NodeName=janus-n2", "State=RESUME")
    log = run.log()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log
    assert "srun exited with 75" in log and "requeueing job" in log, log
    assert "restart 1: 1 tasks on 1 node(s)" in log, log
    assert "x 2 accumulation x 1 ranks = 1024 tokens" in log, log     # same global batch
    assert "resharding from world 2 / ep 1 / ZeRO-2 to world 1 / ep 1 / ZeRO-2" in log, log
    got, want = run.metrics(), one_node.metrics()
    assert [m["step"] for m in got] == list(range(1, STEPS + 1)), log
    for g, w in zip(got, want):  # ep 1 here, ep 2 in the reference: equal up to summation order
        assert g["loss"] == pytest.approx(w["loss"], abs=LOSS_ATOL), (g, w)
