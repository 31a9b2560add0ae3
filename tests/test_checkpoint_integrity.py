"""Nothing poisoned: damaged checkpoints are never resumed from (resume=auto falls back to the newest
one that verifies), planted pickles never run, non-finite state is never saved, a full disk is one
line, and changed optimizer settings apply on resume while a changed model is refused."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine_launch import logs, metrics, run, small_config
from janus_pretrain import deepspeed_internals as ds
from janus_pretrain.checkpoint.convert import ConvertError, convert_checkpoint
from janus_pretrain.checkpoint.integrity import ALLOWED_GLOBALS, unsafe_globals
from janus_pretrain.checkpoint.layout import MODEL_STATES, rank_file, tag_for_step
from janus_pretrain.checkpoint.training_state import TrainingCheckpointer
from janus_pretrain.config import ScheduleConfig
from janus_pretrain.digests import file_digest
from janus_pretrain.engine.optim import lr_factor
from janus_pretrain.engine.preemption import PREEMPTED_EXIT_CODE
from janus_pretrain.engine.run import CONFIG_EXIT_CODE, DIVERGED_EXIT_CODE

STEPS = 4


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """2 ranks, ep 2, ZeRO-2: checkpoints at steps 2 and 4 (bf16 to cover its pickled classes too)."""
    out = tmp_path_factory.mktemp("saved")
    config = small_config(out, train={"steps": STEPS}, parallel={"ep_size": 2},
                          checkpoint={"every": 2, "keep": 5})
    assert run(2, {"config": config}, out) == [0, 0], logs(out)
    return out


def _copy_run(saved: Path, dest: Path) -> Path:
    shutil.copytree(saved / "checkpoints", dest / "checkpoints")
    return dest


def _flip_bytes(path: Path, offset_fraction: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    at = int(len(data) * offset_fraction)
    data[at:at + 8] = bytes(b ^ 0xFF for b in data[at:at + 8])
    path.write_bytes(bytes(data))


class _Payload:
    """Unpickling this runs code: it writes a marker file (what an attacker would do, harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _plant(path: Path, marker: Path) -> None:
    """Replace a checkpoint file by one carrying the payload, and fix its digest in meta.json
    (an attacker who can write the file can write meta.json too)."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    blob["payload"] = _Payload(marker)
    torch.save(blob, path)
    meta_path = path.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"][path.name] = file_digest(path)
    meta_path.write_text(json.dumps(meta))


def test_every_file_has_a_recorded_digest_and_only_allowed_globals(saved):
    folder = saved / "checkpoints" / tag_for_step(STEPS)
    meta = json.loads((folder / "meta.json").read_text())
    on_disk = {p.name for p in folder.glob("*.pt")}
    assert set(meta["files"]) == on_disk and len(on_disk) == 7  # model states, 2 zero, 2 rank, 2 experts
    for name, digest in meta["files"].items():
        assert file_digest(folder / name) == digest
        assert unsafe_globals(folder / name) == [], name
    # our own files need no allow-listed global at all: they load with weights_only=True
    for name in (rank_file(0), "experts_ep1.pt"):
        torch.load(folder / name, weights_only=True)
    assert "builtins.exec" not in ALLOWED_GLOBALS


def test_damaged_latest_checkpoint_is_skipped_and_the_run_continues_finite(saved, tmp_path):
    out = _copy_run(saved, tmp_path)
    _flip_bytes(out / "checkpoints" / tag_for_step(STEPS) / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    config = small_config(out, train={"steps": STEPS + 2}, parallel={"ep_size": 2},
                          checkpoint={"every": 2, "keep": 5})
    assert run(2, {"config": config}, out) == [0, 0], logs(out)
    log = (out / "log_rank0.txt").read_text()
    assert "zero_pp_rank_1_mp_rank_00_optim_states.pt: sha256 mismatch" in log and "DAMAGED" in log
    assert f"RESUMING FROM {tag_for_step(2)}" in log
    assert f"resumed from {out / 'checkpoints' / tag_for_step(2)} at step 2" in log
    resumed = [m for m in metrics(out) if m["step"] > 2]
    assert [m["step"] for m in resumed] == [3, 4, 5, 6]
    assert all(math.isfinite(m["loss"]) and not m["skipped"] for m in resumed)


def test_explicit_resume_of_a_damaged_tag_is_one_line_error(saved, tmp_path):
    out = _copy_run(saved, tmp_path)
    _flip_bytes(out / "checkpoints" / tag_for_step(STEPS) / "experts_ep0.pt")
    config = small_config(out, train={"steps": STEPS + 2}, parallel={"ep_size": 2},
                          checkpoint={"every": 2, "resume": tag_for_step(STEPS)})
    assert run(2, {"config": config}, out) == [CONFIG_EXIT_CODE] * 2, logs(out)
    errors = [line for line in (out / "log_rank0.txt").read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "experts_ep0.pt: sha256 mismatch" in errors[0]


# model states slow: the next test plants a payload in a model-states file DeepSpeed would load, by default
@pytest.mark.parametrize("victim", [rank_file(1), pytest.param(MODEL_STATES, marks=pytest.mark.slow)])
def test_a_planted_pickle_payload_never_runs(saved, tmp_path, victim):
    out = _copy_run(saved, tmp_path)
    folder = out / "checkpoints" / tag_for_step(STEPS)
    marker = tmp_path / "pwned"
    _plant(folder / victim, marker)
    with pytest.raises(ConvertError, match="refusing to unpickle: it references builtins.exec"):
        convert_checkpoint(out / "checkpoints")
    # resume: the rank that reads the file refuses it before DeepSpeed or torch unpickles it
    rank = 1 if victim == rank_file(1) else 0
    ctx = SimpleNamespace(rank=rank, ep_rank=rank, is_main=rank == 0)
    problem = TrainingCheckpointer(out / "checkpoints", 5, ctx).verify(tag_for_step(STEPS))
    assert problem and "refusing to unpickle" in problem or "cannot be loaded safely" in problem
    config = small_config(out, train={"steps": STEPS + 1}, parallel={"ep_size": 2},
                          checkpoint={"resume": tag_for_step(STEPS)})
    assert run(2, {"config": config}, out) == [CONFIG_EXIT_CODE] * 2, logs(out)
    assert not marker.exists()
    # and with --trust-checkpoint the converter would run it: the scan is what stands in the way
    try:
        convert_checkpoint(out / "checkpoints", trust=True)
    except ConvertError:
        pass
    assert marker.exists()


def test_a_payload_in_the_files_deepspeed_opens_never_runs_whatever_the_checkpoint_names(saved, tmp_path):
    """Issue 27, dangerous 1: the payload sits in the ZeRO file DeepSpeed opens for rank 0 while
    rank_0.pt names a clean decoy, and in an extra model-states file DeepSpeed's glob would load;
    the digests are fixed up. The files scanned are the ones DeepSpeed's own functions name."""
    out = _copy_run(saved, tmp_path)
    folder = out / "checkpoints" / tag_for_step(STEPS)
    marker = tmp_path / "pwned"
    zero = ds.zero_file_of_rank(0, bf16=False)
    assert (folder / zero).is_file()  # the name DeepSpeed's function gives is the file the save wrote
    _plant(folder / zero, marker)
    shutil.copy(folder / MODEL_STATES, folder / "mp_rank_01_model_states.pt")
    _plant(folder / "mp_rank_01_model_states.pt", marker)
    own = torch.load(folder / rank_file(0), weights_only=True)
    own["zero_file"] = MODEL_STATES  # the decoy: clean, and scanned by the old code instead
    torch.save(own, folder / rank_file(0))
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"][rank_file(0)] = file_digest(folder / rank_file(0))
    (folder / "meta.json").write_text(json.dumps(meta))
    ctx = SimpleNamespace(rank=0, ep_rank=0, is_main=True)
    problem = TrainingCheckpointer(out / "checkpoints", 5, ctx).verify(tag_for_step(STEPS))
    assert problem and "records zero_file 'mp_rank_00_model_states.pt'" in problem and zero in problem
    with pytest.raises(ConvertError, match="records zero_file"):
        convert_checkpoint(out / "checkpoints")
    config = small_config(out, train={"steps": STEPS + 1}, parallel={"ep_size": 2},
                          checkpoint={"resume": tag_for_step(STEPS)})
    assert run(2, {"config": config}, out) == [CONFIG_EXIT_CODE] * 2, logs(out)
    errors = [line for line in (out / "log_rank0.txt").read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "records zero_file" in errors[0], logs(out)
    assert "(and 1 more problems)" in (out / "log_rank0.txt").read_text()  # rank 1: the extra model states
    assert not marker.exists()


def test_a_resume_that_switches_the_precision_is_one_line_naming_it():
    from janus_pretrain.checkpoint.layout import CheckpointError
    from janus_pretrain.checkpoint.meta import read_meta
    from janus_pretrain.config import config_from_dict
    from janus_pretrain.engine.resume import check_precision

    folder = Path(__file__).parent / "fixtures" / "main_b7316c0" / "checkpoints" / "step_00000003"
    meta = read_meta(folder)
    config = config_from_dict({**meta.config, "source": ""}, "run.yaml", ["train.precision=bf16"])
    with pytest.raises(CheckpointError, match="trained with train.precision=fp32, run.yaml has "
                                              "train.precision=bf16; resume with train.precision=fp32"):
        check_precision(folder, meta, config)
    check_precision(folder, meta, config_from_dict({**meta.config, "source": ""}, "run.yaml"))


def test_changed_lr_applies_from_the_resumed_step_and_is_logged(tmp_path):
    config = small_config(tmp_path, train={"steps": 6}, optimizer={"lr": 3.0e-3}, checkpoint={"every": 0})
    assert run(2, {"config": config, "preempt_at": 3}, tmp_path) == [PREEMPTED_EXIT_CODE] * 2, logs(tmp_path)
    config = small_config(tmp_path, train={"steps": 6}, optimizer={"lr": 1.5e-3, "weight_decay": 0.05})
    assert run(2, {"config": config}, tmp_path) == [0, 0], logs(tmp_path)
    log = (tmp_path / "log_rank0.txt").read_text()
    assert "changed since checkpoint" in log and "optimizer.lr: 0.003 -> 0.0015" in log
    assert "optimizer.weight_decay: 0.1 -> 0.05" in log
    lrs = {m["step"]: m["lr"] for m in metrics(tmp_path)}
    schedule = ScheduleConfig()
    assert lrs[3] == pytest.approx(3.0e-3 * lr_factor(2, 6, schedule, 3.0e-3))  # before the stop
    for step in (4, 5, 6):  # step s uses the lr of schedule position s - 1, with the new peak
        assert lrs[step] == pytest.approx(1.5e-3 * lr_factor(step - 1, 6, schedule, 1.5e-3), rel=1e-9)


def test_changed_model_on_resume_is_one_line_listing_the_keys(saved, tmp_path):
    out = _copy_run(saved, tmp_path)
    config = small_config(out, train={"steps": STEPS + 1}, parallel={"ep_size": 2})
    config["model"].update(intermediate_size=48, d_state=8, scan_chunk=8)  # scan_chunk: runtime only
    assert run(2, {"config": config}, out) == [CONFIG_EXIT_CODE] * 2, logs(out)
    errors = [line for line in (out / "log_rank0.txt").read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "model.d_state: 4 there, 8 here" in errors[0] and "model.intermediate_size: 32 there, 48 here" in errors[0]
    assert "scan_chunk" not in errors[0]


def test_non_finite_weights_are_never_saved(tmp_path):
    config = small_config(tmp_path, train={"steps": 8, "max_bad_steps": 2}, parallel={"ep_size": 2},
                          checkpoint={"every": 1, "keep": 10})
    codes = run(2, {"config": config, "faults": {"poison_at": 2}}, tmp_path)
    assert codes == [DIVERGED_EXIT_CODE] * 2, logs(tmp_path)
    log = (tmp_path / "log_rank0.txt").read_text()
    assert f"REFUSED to save {tag_for_step(2)}" in log
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("step_*")) == [tag_for_step(1)]
    assert (folder / "latest").read_text().strip() == tag_for_step(1)


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    config = small_config(tmp_path, train={"steps": 4}, parallel={"ep_size": 2}, checkpoint={"every": 1})
    codes = run(2, {"config": config, "faults": {"enospc_at": 2}}, tmp_path)
    assert codes == [CONFIG_EXIT_CODE] * 2, logs(tmp_path)
    errors = [line for line in (tmp_path / "log_rank0.txt").read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "free space" in errors[0]
    assert f"{tag_for_step(1)}, is intact" in errors[0]
    folder = tmp_path / "checkpoints"
    assert (folder / "latest").read_text().strip() == tag_for_step(1)
    assert not (folder / tag_for_step(2)).exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (every write: No space left on device)")
def test_a_torch_save_that_cannot_write_is_one_line_and_removes_the_half_written_tag(tmp_path):
    """Issue 27, tracebacks: on a full disk torch.save raises RuntimeError (its zip writer), not
    OSError; writing to /dev/full gives exactly that error, in-process on one gloo rank."""
    import torch.distributed as dist

    from janus_pretrain.checkpoint.meta import CheckpointMeta, Layout, Progress
    from janus_pretrain.checkpoint.training_state import CheckpointWriteError
    from janus_pretrain.engine.distributed import free_port

    class Engine:
        module = torch.nn.Linear(2, 2)
        optimizer = None

        def save_checkpoint(self, root, tag, client_state, save_latest):
            (Path(root) / tag).mkdir(parents=True, exist_ok=True)
            (Path(root) / tag / MODEL_STATES).write_bytes(b"half")
            torch.save({"w": torch.zeros(100_000)}, "/dev/full")

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        ctx = SimpleNamespace(rank=0, ep_rank=0, edp_rank=0, is_main=True, device="cpu")
        checkpoints = TrainingCheckpointer(tmp_path / "checkpoints", 2, ctx, message=lambda _: None)
        meta = CheckpointMeta(config={}, progress=Progress(), layout=Layout(1, 1, 0), precision="fp32",
                              micro_batch=1, grad_accum=1)
        with pytest.raises(CheckpointWriteError) as caught:
            checkpoints.save(Engine(), 1, meta, {})
    finally:
        dist.destroy_process_group()
    message = str(caught.value)
    assert "\n" not in message and "rank 0: torch.save could not write" in message and "free space" in message
    assert "the last complete checkpoint, none, is intact" in message
    assert not (tmp_path / "checkpoints" / tag_for_step(1)).exists()


def test_the_watchdog_names_a_rank_that_blocked_after_the_dead_one_as_waiting(tmp_path, monkeypatch, capsys):
    """The race the engine test below can hit: rank 1 stops at t = 0, rank 0 beats once more at
    t = 2 and then blocks in the collective; at t = 5 (timeout 4) rank 1 is past the timeout and
    rank 0 is not yet, but rank 0 waits for rank 1 and the message must say so."""
    from janus_pretrain.engine.watchdog import Watchdog

    monkeypatch.delenv("JANUS_JOB_STATUS", raising=False)
    dog = Watchdog(tmp_path, rank=0, world_size=2, timeout_s=4)
    dog.folder.mkdir()
    for rank in (0, 1):
        dog.path(rank).write_text(json.dumps({"step": 4, "phase": "train step", "beat": 1, "pid": rank}))
        dog.alive_path(rank).write_text("1")
    dog.progress(0.0)
    dog.path(0).write_text(json.dumps({"step": 4, "phase": "backward", "beat": 2, "pid": 0}))
    dog.alive_path(0).write_text("2")
    dog.progress(2.0)
    ranks = dog.progress(5.0)
    assert [r for r, seconds, _, _ in ranks if seconds > dog.timeout] == [1]
    dog._report(ranks)
    message = capsys.readouterr().err
    assert "rank 1 has not responded for 5 s" in message and "ranks [0] wait for it" in message


def test_a_stalled_rank_ends_the_job_with_the_watchdog_code_naming_it(tmp_path, monkeypatch):
    """Rank 1 stopped (SIGSTOP) in step 4: rank 0, blocked in a collective, makes no progress
    either but stays alive; the message blames rank 1 only, and the note for the launcher is left."""
    import signal
    import time

    from engine_launch import start, wait
    from janus_pretrain.engine.watchdog import WATCHDOG_EXIT_CODE

    config = small_config(tmp_path, train={"steps": 50, "watchdog_s": 4})
    monkeypatch.setenv("JANUS_JOB_STATUS", str(tmp_path / "job_status"))
    procs = start(2, {"config": config, "faults": {"stop_at": 4}}, tmp_path)
    started = time.monotonic()
    try:
        assert wait(procs[:1], tmp_path, timeout=120) == [WATCHDOG_EXIT_CODE], logs(tmp_path)
    finally:
        procs[1].send_signal(signal.SIGKILL)  # what srun does to the stopped task after --wait
        procs[1].wait()
    assert time.monotonic() - started < 100
    log = (tmp_path / "log_rank0.txt").read_text()
    assert "watchdog (rank 0): rank 1 has not responded" in log and "last seen: step 4, train step" in log
    assert "ranks [0] wait for it" in log and "rank 0 has not responded" not in log
    assert "rank 1 has not responded" in (tmp_path / "job_status" / "watchdog_rank_0").read_text()
