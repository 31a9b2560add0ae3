"""Bad configs fail before any heavy work (no process group, no DeepSpeed import), each with one
clear line that names the key."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine_launch import REPO, bundled_shards, small_config, start, wait
from janus_pretrain.config import ConfigError, load_config
from janus_pretrain.engine.preemption import PREEMPTED_EXIT_CODE
from janus_pretrain.engine.startup import startup_checks

TINY = REPO / "configs" / "tiny.yaml"
NO_PROBES = "eval.every=0"  # tiny.yaml probes downstream tasks, which context parallelism refuses


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return bundled_shards(tmp_path_factory)


def _config(tmp_path: Path, manifest: Path, *overrides: str):
    return load_config(TINY, [f"data.manifest={manifest}", f"checkpoint.dir={tmp_path / 'ckpt'}",
                              f"logging.dir={tmp_path / 'tb'}", *overrides])


def _cli(tmp_path: Path, *args: str, world_size: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}
    return subprocess.run([sys.executable, str(REPO / "launch" / "pretrain.py"), "--config", str(TINY),
                           "--set", f"checkpoint.dir={tmp_path / 'ckpt'}", "--set", f"logging.dir={tmp_path / 'tb'}",
                           *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_good_config_passes_and_resolves_the_batch(tmp_path, manifest):
    plan = startup_checks(_config(tmp_path, manifest), world_size=2)
    assert (plan.micro_batch, plan.grad_accum, plan.tokens_per_step) == (2, 1, 2048)
    # cp 2 on 4 ranks: 2 data-parallel ranks, so the same global batch and no more accumulation
    plan = startup_checks(_config(tmp_path, manifest, NO_PROBES, "parallel.cp_size=2"), world_size=4)
    assert (plan.data_ranks, plan.grad_accum, plan.tokens_per_step) == (2, 1, 2048)


@pytest.mark.parametrize("overrides, world_size, expected", [
    (["parallel.ep_size=2"], 3, "parallel.ep_size=2 does not divide the world size 3"),
    (["parallel.ep_size=3"], 3, "parallel.ep_size=3 does not divide model.num_experts=4"),
    (["parallel.zero_stage=3"], 2, "parallel.zero_stage=3 is not supported with MoE"),
    (["train.global_batch_tokens=3000"], 2, "train.global_batch_tokens=3000 is not a multiple of"),
    (["train.grad_accum=2"], 2, "train.grad_accum=2 disagrees with train.global_batch_tokens=2048"),
    (["data.seq_len=4096", "train.global_batch_tokens=0"], 2, "data.seq_len=4096 is longer than the shard windows (2048 bp"),
    # context parallelism: what the model half refuses, refused before the process group
    ([NO_PROBES, "parallel.cp_size=4"], 6, "parallel.cp_size=4 does not divide the world size 6"),
    ([NO_PROBES, "parallel.cp_size=3", "train.global_batch_tokens=0"], 3,
     "data.seq_len=512 is not divisible by parallel.cp_size=3"),
    ([NO_PROBES, "parallel.cp_size=256", "train.global_batch_tokens=0"], 256,
     "data.seq_len=512 / parallel.cp_size=256 = 2 positions per rank is shorter than the Mamba conv halo "
     "model.d_conv - 1 = 3"),
    ([NO_PROBES, "parallel.cp_size=2", "model.objective=mlm"], 2,
     "parallel.cp_size=2 needs model.objective=janus (got mlm)"),
    (["parallel.cp_size=2", "eval.every=5", "eval.suite=suite.yaml"], 2,
     "eval.every=5 (downstream probes) is not supported with parallel.cp_size=2"),
    # the global batch counts data-parallel ranks: 2 ranks with cp 2 read one sample per micro batch
    ([NO_PROBES, "parallel.cp_size=2", "train.grad_accum=1"], 2,
     "(which needs 2 at micro_batch 2, seq_len 512, 1 data-parallel ranks (2 ranks / cp_size 2))"),
    ([NO_PROBES, "parallel.cp_size=2", "data.streams=3"], 4,
     "data.streams=3 is not divisible by the 2 data-parallel ranks"),
])
def test_inconsistent_settings_are_one_clear_error(tmp_path, manifest, overrides, world_size, expected):
    with pytest.raises(ConfigError) as info:
        startup_checks(_config(tmp_path, manifest, *overrides), world_size=world_size)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_manifest_is_a_clear_error(tmp_path, manifest):
    config = _config(tmp_path, tmp_path / "nowhere" / "manifest.json")
    with pytest.raises(ConfigError, match=r"data.manifest .*nowhere.* does not exist; create it with"):
        startup_checks(config, world_size=2)


def test_manifest_directory_and_unknown_mixture_species_are_one_line_before_the_process_group(tmp_path, manifest):
    config = _config(tmp_path, manifest.parent)
    with pytest.raises(ConfigError) as info:
        startup_checks(config, world_size=2)
    assert (f"data.manifest {manifest.parent} is a directory; point it at the manifest.json inside "
            f"(set data.manifest to {manifest})") in str(info.value)
    config = _config(tmp_path, manifest, "data.mixture={scer: 1.0, mouse: 2.0}")
    with pytest.raises(ConfigError) as info:
        startup_checks(config, world_size=2)
    assert "data.mixture: unknown species ['mouse']; the manifest has" in str(info.value)
    assert str(TINY) in str(info.value) and "\n" not in str(info.value)


def test_unwritable_checkpoint_dir_is_a_clear_error(tmp_path, manifest):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    config = _config(tmp_path, manifest, f"checkpoint.dir={blocker / 'ckpt'}")
    with pytest.raises(ConfigError, match=r"checkpoint.dir .*a_file/ckpt is not writable"):
        startup_checks(config, world_size=2)


@pytest.mark.parametrize("args, expected", [
    (["--set", "train.stepz=3"], "unknown key 'train.stepz'"),
    (["--set", "train.steps=many"], "'train.steps' must be int"),
])
def test_cli_rejects_bad_keys_with_one_line(tmp_path, args, expected):
    result = _cli(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and expected in result.stderr


def test_cli_startup_error_comes_before_deepspeed_is_even_imported(tmp_path, manifest):
    result = _cli(tmp_path, "--set", f"data.manifest={manifest}", "--set", "parallel.ep_size=2", world_size=3)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and "parallel.ep_size=2 does not divide the world size 3" in lines[0]
    assert "accelerator" not in result.stdout + result.stderr  # DeepSpeed logs its accelerator on import


def _isolate(monkeypatch, *keys: str) -> None:
    """Undo everything prepare_environment sets in this (shared) test process afterwards."""
    import torch

    for key in (*keys, "OMP_NUM_THREADS", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR", "MASTER_ADDR", "MASTER_PORT"):
        # setenv first: delenv of an absent key records no undo, and what prepare_environment then
        # sets (RANK=3, WORLD_SIZE=4, ...) would leak into later tests' subprocesses
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)


def test_ranks_come_from_slurm_when_the_launcher_variables_are_absent(monkeypatch):
    from janus_pretrain.engine.distributed import prepare_environment

    _isolate(monkeypatch, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2(x2)")
    monkeypatch.setenv("MASTER_ADDR", "node7")
    assert prepare_environment() == {"rank": 3, "world_size": 4, "local_rank": 1}
    assert os.environ["LOCAL_WORLD_SIZE"] == "2" and os.environ["MASTER_ADDR"] == "node7"


def test_a_plain_process_gets_a_world_of_one(monkeypatch):
    from janus_pretrain.engine.distributed import prepare_environment

    _isolate(monkeypatch, "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID")
    assert prepare_environment() == {"rank": 0, "world_size": 1, "local_rank": 0}
    assert os.environ["MASTER_ADDR"] == "127.0.0.1" and int(os.environ["MASTER_PORT"]) > 0


@pytest.mark.parametrize("work, code, stderr", [("lambda: 75", 75, ""),
                                                 ("lambda: 1 / 0", 1, "ZeroDivisionError: division by zero")])
def test_a_training_process_leaves_with_its_code_and_its_output_flushed(work, code, stderr):
    """exit_after skips interpreter finalization (a gloo worker thread freeing tensors there
    aborted a rank with -6); what was printed without flush into a pipe must still arrive."""
    script = ("from janus_pretrain.engine.distributed import exit_after\n"
              f"print('buffered line')\nexit_after({work})\nprint('never')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert done.stdout == "buffered line\n"
    assert stderr in done.stderr and ("Traceback" in done.stderr) == bool(stderr)


def test_a_stale_build_lock_is_named_after_a_few_seconds_and_a_stop_signal_ends_the_wait(tmp_path, monkeypatch,
                                                                                         capsys):
    """Issue 27, silent 9, in-process: the wait says which file it waits for and how to clear it."""
    from janus_pretrain.engine.distributed import StoppedWaiting, build_lock, wait_for_build_lock

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = build_lock()
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    stop_at = time.monotonic() + 0.6
    with pytest.raises(StoppedWaiting, match="stopped while waiting for .*deepspeed_shm_comm/lock"):
        wait_for_build_lock(lambda: time.monotonic() > stop_at, notice_s=0.2, poll_s=0.05)
    err = capsys.readouterr().err
    assert f"waiting for {lock}" in err and f"rm {lock}" in err
    lock.unlink()
    wait_for_build_lock(lambda: True)  # no lock: returns at once, whatever the flag says


def test_sigterm_while_a_stale_build_lock_blocks_startup_exits_with_the_preemption_code(tmp_path, monkeypatch):
    """Issue 27, silent 9: `janus pretrain` used to wait forever with no message and ignore SIGTERM."""
    import signal

    lock = tmp_path / "extensions" / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(lock.parent.parent))
    (proc,) = start(1, {"config": small_config(tmp_path)}, tmp_path)
    log = tmp_path / "log_rank0.txt"
    deadline = time.monotonic() + 120
    while f"waiting for {lock}" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert wait([proc], tmp_path, timeout=60) == [PREEMPTED_EXIT_CODE], log.read_text()
    assert "nothing trained" in log.read_text()
