"""The end-of-run summary (engine/summary.py) and the validation history it reads
(validation.jsonl, kept consistent over a resume by engine/metrics_log.py)."""
from __future__ import annotations

import json
import math

from pathlib import Path

import pytest

from janus_pretrain.config import LoggingConfig
from janus_pretrain.engine.metrics_log import MetricsLogger
from janus_pretrain.engine.summary import BestValidation, RunSummary, best_validation


def _validate(log: MetricsLogger, step: int, losses: dict[str, float]) -> None:
    log.validation(step, {f"valid/{name}/{metric}": value for name, value in losses.items()
                          for metric in ("loss", "accuracy")})


def test_best_validation_is_the_lowest_loss_per_species_over_a_resumed_history(tmp_path):
    log = MetricsLogger(LoggingConfig(backends=[]), tmp_path, enabled=True, total_steps=30)
    log.truncate_after(0)
    _validate(log, 10, {"all": 1.5, "human": 1.4, "mouse": 1.6})
    _validate(log, 20, {"all": 1.3, "human": 1.45, "mouse": 1.2})
    _validate(log, 25, {"all": 0.1, "human": 0.1, "mouse": 0.1})  # written by a run killed before its step-25 checkpoint
    log.close()

    resumed = MetricsLogger(LoggingConfig(backends=[]), tmp_path, enabled=True, total_steps=30)
    resumed.truncate_after(20)  # the checkpoint it resumes from: step 25 is redone, its old line must go
    _validate(resumed, 30, {"all": 1.35, "human": 1.3, "mouse": float("nan")})
    resumed.close()
    best = best_validation(tmp_path / "validation.jsonl")
    assert list(best) == ["all", "human", "mouse"]  # pooled first, then species by name
    assert best == {"all": BestValidation(1.3, 20), "human": BestValidation(1.3, 30), "mouse": BestValidation(1.2, 20)}


def test_no_validation_file_means_no_best_validation(tmp_path):
    assert best_validation(tmp_path / "validation.jsonl") == {}


def _summary(**changes) -> RunSummary:
    fields = dict(ended="finished", steps=100, steps_this_session=40, tokens_seen=100 * 4096, tokens_this_session=40 * 4096,
                  wall_time_s=80.0, run_wall_time_s=200.0, final_loss=1.25, skipped_steps=2, corrupt_samples=3,
                  best_validation={"all": BestValidation(1.3, 100), "human": BestValidation(1.28, 90)},
                  locations={"checkpoints": "/r/checkpoints (latest: step_00000100)", "metrics": "/r/metrics.jsonl"})
    return RunSummary(**{**fields, **changes})


def test_summary_text_fits_a_screen_and_states_every_fact():
    text = _summary().text()
    lines = text.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 100
    assert "100 (40 in this session)" in text and "409,600 (163,840 in this session)" in text
    assert "0:01:20 in this session (0:03:20 over the run), 2,048 tokens/s" in text and lines[1] == "ended            finished"
    assert "2 (NaN/inf" in text and "3 dropped" in text
    assert any("human" in line and "1.2800 (90)" in line for line in lines)
    assert any(line.startswith("checkpoints") and "step_00000100" in line for line in lines)


def test_summary_json_has_the_rate_and_no_nan(tmp_path):
    _summary(final_loss=math.nan, corrupt_samples=None).write(tmp_path / "run_summary.json")
    saved = json.loads((tmp_path / "run_summary.json").read_text())
    assert saved["tokens_per_s"] == 40 * 4096 / 80.0 and saved["ended"] == "finished"
    assert saved["final_loss"] is None and saved["corrupt_samples"] is None
    assert saved["best_validation"]["human"] == {"loss": 1.28, "step": 90}


def test_checkpoints_of_earlier_versions_without_train_seconds_still_resume():
    import json

    from janus_pretrain.checkpoint.meta import CheckpointMeta, MetaError

    fixture = Path(__file__).parent / "fixtures" / "main_b7316c0" / "checkpoints" / "step_00000003" / "meta.json"
    raw = json.loads(fixture.read_text())
    older = {k: v for k, v in raw.items() if k != "train_seconds"}
    progress = CheckpointMeta.from_dict(older, "meta.json").progress
    assert (progress.step, progress.train_seconds) == (3, 0.0)
    with pytest.raises(MetaError, match=r"\['step'\] missing"):  # a field every version wrote is still required
        CheckpointMeta.from_dict({k: v for k, v in raw.items() if k != "step"}, "meta.json")
