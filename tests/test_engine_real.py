"""The real entry point on the bundled genomes: tiny.yaml learns on 2 CPU ranks (ZeRO-2, expert
parallel 2), and 1m.yaml builds and runs a step at a short sequence length."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from engine_launch import REPO, bundled_shards, logs, metrics, run_cli, start_cli, wait
from janus_pretrain.engine.preemption import PREEMPTED_EXIT_CODE


def _tensorboard_tags(directory) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return set(events.Tags()["scalars"])


def test_tiny_loss_decreases_on_real_genomes(tmp_path_factory, tmp_path):
    manifest = bundled_shards(tmp_path_factory)
    codes, log = run_cli(2, ["--config", "configs/tiny.yaml", "--set", f"data.manifest={manifest}",
                             "--set", "train.steps=24", "--set", "train.eval_every=0",
                             "--set", f"checkpoint.dir={tmp_path / 'checkpoints'}",
                             "--set", f"logging.dir={tmp_path / 'tensorboard'}"], tmp_path)
    assert codes == [0, 0], logs(tmp_path)
    steps = metrics(tmp_path)
    ce = [m["ce_loss"] for m in steps]
    assert len(ce) == 24 and not any(m["skipped"] for m in steps)
    assert sum(ce[-4:]) / 4 < ce[0] - 0.5  # from ~ln(16) towards the ~1.3-1.4 nats of DNA
    assert "validation at step 24" in log and "final: step=24" in log
    tags = _tensorboard_tags(tmp_path / "tensorboard")
    for tag in ("train/loss", "train/aux_loss", "train/lr", "train/grad_norm", "perf/tokens_per_s",
                "perf/peak_memory_gb", "valid/all/loss", "valid/all/accuracy", "data/corrupt_samples"):
        assert tag in tags, tag
    assert any(t.startswith("valid/") and t.endswith("/accuracy") and "/all/" not in t for t in tags)
    expert_tags = [t for t in tags if t.startswith("experts/") and "/expert_" in t]
    assert len(expert_tags) == 2 * 2 * 4  # 2 MoE layers x 2 streams (own experts each) x 4 experts
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000024"
    saved = json.loads((tmp_path / "deepspeed_config.json").read_text())
    assert saved["zero_optimization"]["stage"] == 2 and saved["train_batch_size"] == 4


def test_1m_config_builds_and_runs_one_step_at_a_short_length(tmp_path_factory, tmp_path):
    manifest = bundled_shards(tmp_path_factory)
    codes, log = run_cli(1, ["--config", str(REPO / "configs" / "1m.yaml"), "--set", f"data.manifest={manifest}",
                             "--set", "data.seq_len=256", "--set", "data.num_workers=1",
                             "--set", "data.valid_max_batches=1", "--set", "train.steps=1",
                             "--set", "model.kernels=reference", "--set", "model.loss_chunk=64",
                             "--set", "train.precision=fp32",
                             "--set", f"checkpoint.dir={tmp_path / 'checkpoints'}",
                             "--set", f"logging.dir={tmp_path / 'tensorboard'}"], tmp_path)
    assert codes == [0], logs(tmp_path)
    (step,) = metrics(tmp_path)
    assert step["step"] == 1 and 2.0 < step["ce_loss"] < 3.5  # about ln(16) at init
    assert "final: step=1" in log
    best = json.loads((tmp_path / "run_summary.json").read_text())["best_validation"]  # the final validation
    assert list(best)[0] == "all" and len(best) >= 2 and all(b["step"] == 1 for b in best.values())
    species = [b["loss"] for name, b in best.items() if name != "all"]
    assert min(species) <= best["all"]["loss"] <= max(species)  # the pooled loss is a token-weighted mean
    assert "best validation loss (step):" in log


def test_damaged_shard_ends_the_run_with_one_line(tmp_path_factory, tmp_path):
    import shutil

    shards = shutil.copytree(bundled_shards(tmp_path_factory).parent, tmp_path / "shards")
    for path in (shards / "train").glob("*.tar"):
        path.write_bytes(path.read_bytes()[:1536])  # every train shard cut: the first batch meets one
    codes, log = run_cli(1, ["--config", "configs/tiny.yaml", "--set", f"data.manifest={shards / 'manifest.json'}",
                             "--set", "train.steps=2", "--set", "parallel.ep_size=1",
                             "--set", "train.global_batch_tokens=0",
                             "--set", f"checkpoint.dir={tmp_path / 'checkpoints'}",
                             "--set", f"logging.dir={tmp_path / 'tensorboard'}"], tmp_path)
    assert codes == [2], log
    (line,) = [line for line in log.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: rank 0: shard {shards / 'train'}") and "bytes, the manifest says" in line
    assert "Traceback" not in log


@pytest.mark.slow
def test_signal_to_every_process_incl_data_workers_then_resume_matches_straight_run(tmp_path_factory, tmp_path):
    """What Slurm does: SIGUSR1 to every process of the job step, data-loader workers included.
    The real data stream resumes exactly, so the losses match an uninterrupted run step by step."""
    manifest = bundled_shards(tmp_path_factory)
    base = ["--config", "configs/tiny.yaml", "--set", f"data.manifest={manifest}", "--set", "train.steps=12",
            "--set", "train.eval_every=0", "--set", "checkpoint.every=0"]

    def dirs(out):
        return ["--set", f"checkpoint.dir={out / 'checkpoints'}", "--set", f"logging.dir={out / 'tensorboard'}"]

    straight = tmp_path / "straight"
    codes, _ = run_cli(2, base + dirs(straight), straight)
    assert codes == [0, 0], logs(straight)

    out = tmp_path / "interrupted"
    procs = start_cli(2, base + dirs(out), out)
    deadline = time.monotonic() + 300
    while not ((out / "metrics.jsonl").is_file() and len(metrics(out)) >= 3):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), logs(out)
        time.sleep(0.1)
    children = subprocess.run(["pgrep", "-P", ",".join(str(p.pid) for p in procs)], capture_output=True,
                              text=True).stdout.split()
    assert children  # the data-loader workers (data.num_workers=1 per rank)
    for pid in [p.pid for p in procs] + [int(c) for c in children]:
        os.kill(pid, signal.SIGUSR1)
    assert wait(procs, out) == [PREEMPTED_EXIT_CODE] * 2, logs(out)
    assert len(metrics(out)) < 12
    codes, _ = run_cli(2, base + dirs(out), out)
    assert codes == [0, 0], logs(out)
    assert [m["loss"] for m in metrics(out)] == [m["loss"] for m in metrics(straight)]
