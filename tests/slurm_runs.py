"""Real-trainer Slurm runs for the tests: submit launch/slurm_pretrain.sh into a run directory.

Shared by tests/test_slurm_training.py (one node) and tests/test_slurm_multinode.py (two
nodes): a `Run` submits the sbatch script with configs/tiny.yaml made small (8 steps, seq_len
256, a checkpoint every 2 steps) and reads back its log, metrics and checkpoints; INJECT is the
test-only fault injection the job runs as its $PYTHON; `shards` is the bundled genomes sharded.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "slurm_pretrain.sh"
STEPS, EVERY = 8, 2
JOB_TIMEOUT = 420  # seconds; a job takes ~40 s on 2 busy cores

# Test-only fault injection, run as the job's $PYTHON: on rank KILL_RANK (first start only)
# SIGKILLs itself either in the middle of the checkpoint save of tag KILL_TAG - after DeepSpeed
# wrote its files, before the save is marked complete - or in the forward pass of optimizer step
# KILL_STEP (grad_accum is 1). Deterministic, unlike a kill -9
# from outside timed against a fast-moving run; the process dies the same way. STALL_STEP instead
# stops rank KILL_RANK (SIGSTOP, first start only) in the forward of that step: a hung rank, which
# only the watchdog of the others can end. STEP_SLEEP slows
# every step of a first start (not the numbers) so that a signal surely lands mid-run. Every rank
# also records where it runs (node, hostname, Slurm ids, rendezvous address) in ranks/.
INJECT = textwrap.dedent('''
    import json, os, runpy, signal, socket, sys
    from pathlib import Path
    sys.path.insert(0, os.environ["JANUS_ROOT"])
    rank = os.environ["SLURM_PROCID"]
    marks = Path(os.environ["FAULT_DIR"])
    where = {k: os.environ.get(k) for k in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS",
             "SLURM_NODEID", "SLURM_LOCALID", "SLURMD_NODENAME", "MASTER_ADDR", "MASTER_PORT")}
    where["hostname"] = socket.gethostname()
    ranks = marks.parent / "ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    (ranks / f"{where['SLURM_JOB_ID']}.{os.environ.get('SLURM_RESTART_COUNT', '0')}.{rank}.json"
     ).write_text(json.dumps(where))

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
    if (rank == os.environ.get("KILL_RANK") and os.environ.get("STALL_STEP")
            and os.environ.get("SLURM_RESTART_COUNT", "0") == "0"):
        from janus_pretrain.engine.trainer import Trainer
        unstalled_forward = Trainer.forward

        def stalling_forward(self, batch):
            if self.step + 1 == int(os.environ["STALL_STEP"]):
                marks.mkdir(parents=True, exist_ok=True)
                (marks / "stalled").write_text(f"forward of step {self.step + 1}")
                os.kill(os.getpid(), signal.SIGSTOP)
            return unstalled_forward(self, batch)
        Trainer.forward = stalling_forward
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

    def submit(self, *sbatch_options: str, nodes: int | str = 1, tasks_per_node: int = 2) -> str:
        sets = [a for o in self.overrides for a in ("--set", o)]
        job = self.slurm.sbatch([f"--nodes={nodes}", f"--ntasks-per-node={tasks_per_node}",
                                 "--cpus-per-task=1", "--time=60",
                                 f"--output={self.root}/slurm-%j.out", *sbatch_options,
                                 str(SCRIPT), "configs/tiny.yaml", *sets], cwd=REPO, env=self.env)
        self.jobs.append(job)
        return job

    def wait(self, job: str) -> dict:
        return self.slurm.wait_job(job, timeout=JOB_TIMEOUT)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("slurm-*.out")))

    def ranks(self, job: str) -> list[dict]:
        """What each rank of `job` (every start) recorded about where it ran, by SLURM_PROCID."""
        found = [json.loads(p.read_text()) for p in (self.root / "ranks").glob(f"{job}.*.json")]
        return sorted(found, key=lambda r: int(r["SLURM_PROCID"]))

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


def final_line(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("final: ")]
    assert len(lines) == 1, log
    return lines[0]


def assert_same_training(run: Run, reference: Run) -> None:
    got, want = run.metrics(), reference.metrics()
    assert [m["step"] for m in got] == list(range(1, STEPS + 1)), run.log()
    assert [m["loss"] for m in got] == [m["loss"] for m in want]
    assert final_line(run.log()) == final_line(reference.log())
    tag = f"step_{STEPS:08d}"
    a, b = run.checkpoint_tensors(tag), reference.checkpoint_tensors(tag)
    assert set(a) == set(b) and len(a) > 10
    for key in b:
        assert torch.equal(a[key], b[key]), key
