"""logging.backends [tensorboard, csv, wandb] on a 1-rank run that is killed and resumed, W&B
offline (no network): every backend describes one history, and the end-of-run summary is right."""
from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest

from engine_launch import logs, metrics, run, small_config
from janus_pretrain.engine.logging_backends import CSV_DIR, WANDB_RUN_ID_FILE, truncate_csv_files
from janus_pretrain.engine.summary import SUMMARY_FILE

STEPS, EVERY, DIE_AT = 5, 2, 4  # checkpoint at 2 and 4; killed inside step 4, after step 3 was logged
TOKENS_PER_STEP = 2 * 64  # small_config: micro_batch 2 x seq_len 64, 1 rank, no accumulation


def wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline W&B run file (run-<id>.wandb): wandb's transaction log, a
    LevelDB-style log (32 KiB blocks; records split into FULL/FIRST/MIDDLE/LAST chunks with a
    7-byte header crc32, length, type) of wandb_internal_pb2.Record messages after a 7-byte header."""
    from wandb.proto import wandb_internal_pb2

    data, rows, pos, chunks = path.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        chunks, pos = chunks + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record.FromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    out = tmp_path_factory.mktemp("backends")
    with pytest.MonkeyPatch.context() as env:  # the ranks inherit this environment
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_DIR", str(out / "wandb_dir"))
        env.setenv("WANDB_SILENT", "true")
        (out / "wandb_dir").mkdir()
        config = small_config(out, train={"steps": STEPS}, checkpoint={"every": EVERY},
                              logging={"backends": ["tensorboard", "csv", "wandb"], "wandb_project": "janus-test"})
        assert run(1, {"config": config, "faults": {"die_at": DIE_AT}}, out) != [0], logs(out)
        killed = {"csv": (out / CSV_DIR / "train_loss.csv").read_text(),
                  "wandb_id": (out / WANDB_RUN_ID_FILE).read_text().strip()}
        assert run(1, {"config": config}, out) == [0], logs(out)
    return out, killed


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_csv_rows_after_a_resume_are_one_history(resumed):
    out, killed = resumed
    assert killed["csv"].count("\n") == 1 + DIE_AT - 1  # header + steps 1..3: step 3 is after the checkpoint
    header, *rows = _csv_rows(out / CSV_DIR / "train_loss.csv")
    assert header == ["step", "loss"]
    assert [int(step) for step, _ in rows] == list(range(1, STEPS + 1))  # step 3 once, no second header
    assert [float(value) for _, value in rows] == [m["loss"] for m in metrics(out)]
    for name in ("train_lr", "perf_tokens_per_s", "data_corrupt_samples"):
        assert [int(r[0]) for r in _csv_rows(out / CSV_DIR / f"{name}.csv")[1:]] == list(range(1, STEPS + 1)), name


def test_tensorboard_keeps_one_history(resumed):
    """The event files hide the steps after the resumed checkpoint (purge_step): step 3, written
    by the killed run and redone after resuming at 2, appears once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = resumed
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, STEPS + 1)) == [m["step"] for m in metrics(out)]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([m["loss"] for m in metrics(out)])


def test_wandb_offline_run_is_resumed_with_the_same_id_and_logs_the_keys(resumed):
    out, killed = resumed
    run_id = (out / WANDB_RUN_ID_FILE).read_text().strip()
    assert run_id == killed["wandb_id"]
    runs = sorted((out / "wandb_dir" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 2, runs  # the killed run and its continuation, one W&B run id
    rows = wandb_history(runs[1] / f"run-{run_id}.wandb")
    assert [row["_step"] for row in rows] == [3, 4, 5]  # only the steps after the checkpoint it resumed
    for row in rows:
        assert {"train/loss", "train/lr", "perf/tokens_per_s", "data/corrupt_samples"} <= set(row)
    losses = {m["step"]: m["loss"] for m in metrics(out)}
    assert [row["train/loss"] for row in rows] == [losses[s] for s in (3, 4, 5)]


def test_run_summary_counts_the_whole_run_and_this_session(resumed):
    out, _ = resumed
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["steps"] == STEPS and summary["steps_this_session"] == STEPS - EVERY
    assert summary["tokens_seen"] == STEPS * TOKENS_PER_STEP
    assert summary["tokens_this_session"] == (STEPS - EVERY) * TOKENS_PER_STEP
    assert summary["tokens_per_s"] == pytest.approx(summary["tokens_this_session"] / summary["wall_time_s"])
    resumed_meta = json.loads((out / "checkpoints" / f"step_{EVERY:08d}" / "meta.json").read_text())
    assert resumed_meta["train_seconds"] > 0  # the killed session's time up to its step-2 checkpoint
    assert summary["run_wall_time_s"] == pytest.approx(resumed_meta["train_seconds"] + summary["wall_time_s"])
    assert summary["skipped_steps"] == 0 and summary["corrupt_samples"] == 0
    assert summary["final_loss"] == metrics(out)[-1]["loss"]
    assert summary["best_validation"] == {}  # the synthetic stream has no validation set
    assert set(summary["locations"]) >= {"checkpoints", "metrics", "tensorboard", "csv", "wandb", "summary"}
    log = (out / "log_rank0.txt").read_text()
    assert "run summary" in log and f"final: step={STEPS} loss=" in log  # the final line tests parse stays


def test_truncate_csv_files_keeps_rows_up_to_the_step_and_drops_empty_files(tmp_path):
    (tmp_path / "train_loss.csv").write_text("step,loss\r\n1,2.5\r\n2,2.25\r\n3,2.0\r\n")
    (tmp_path / "valid_all_loss.csv").write_text("step,loss\r\n3,1.5\r\n")
    assert truncate_csv_files(tmp_path, 2) == ["train_loss"]
    assert (tmp_path / "train_loss.csv").read_bytes() == b"step,loss\r\n1,2.5\r\n2,2.25\r\n"
    assert not (tmp_path / "valid_all_loss.csv").exists()


def test_choosing_wandb_without_the_package_is_a_one_line_error(monkeypatch):
    import importlib.util

    from janus_pretrain.config import ConfigError, LoggingConfig
    from janus_pretrain.engine.logging_backends import check_available

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    check_available(LoggingConfig(backends=["tensorboard", "csv"]), "run.yaml")  # wandb not chosen: fine
    with pytest.raises(ConfigError) as err:
        check_available(LoggingConfig(backends=["tensorboard", "wandb"]), "run.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("run.yaml: logging.backends")
    assert "pip install 'janus-pretrain[wandb]'" in message


@pytest.mark.parametrize("backends, wrong", [(["tensorboard", "mlflow"], "'mlflow' is unknown"),
                                             (["csv", "csv"], "'csv' is listed twice")])
def test_logging_backends_are_checked_at_load(backends, wrong):
    from janus_pretrain.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=wrong):
        config_from_dict({"logging": {"backends": backends}}, "run.yaml")
    assert config_from_dict({}).logging.backends == ["tensorboard"]  # existing runs are unchanged
