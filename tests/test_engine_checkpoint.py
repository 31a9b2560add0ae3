"""Checkpoint directory bookkeeping: `latest` only names complete checkpoints, a save killed
half-way leaves the previous one loadable, keep-last-K never deletes the one in use."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from janus_pretrain.checkpoint.convert import ConvertError, resolve_tag
from janus_pretrain.checkpoint.layout import MODEL_STATES, CheckpointDir, rank_file, tag_for_step


def _save(ckpts: CheckpointDir, step: int, complete: bool = True) -> str:
    """What a save leaves on disk: DeepSpeed's and our files, then (if it finished) COMPLETE."""
    tag = tag_for_step(step)
    folder = ckpts.path(tag)
    folder.mkdir(parents=True)
    (folder / MODEL_STATES).write_bytes(b"x")
    (folder / rank_file(0)).write_bytes(b"x")
    if complete:
        ckpts.mark_complete(tag, json.dumps({"step": step}))
        ckpts.set_latest(tag)
    return tag


def test_latest_is_none_in_an_empty_or_missing_dir(tmp_path):
    assert CheckpointDir(tmp_path / "missing", keep=2).latest() is None
    assert CheckpointDir(tmp_path, keep=2).latest() is None


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_as_latest(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=2)
    good = _save(ckpts, 10)
    _save(ckpts, 20, complete=False)  # kill -9 during the save of step 20
    assert (tmp_path / "latest").read_text().strip() == good
    assert ckpts.latest() == good
    ckpts.discard(tag_for_step(20))  # what the next save of that tag does first (training_state.save)
    assert not ckpts.path(tag_for_step(20)).exists()
    assert ckpts.path(good).is_dir()


def test_latest_pointer_is_never_set_to_an_incomplete_checkpoint(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=2)
    _save(ckpts, 10)
    tag = _save(ckpts, 20, complete=False)
    with pytest.raises(RuntimeError, match="incomplete"):
        ckpts.set_latest(tag)
    assert ckpts.latest() == tag_for_step(10)


def test_a_stale_or_broken_latest_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=5)
    _save(ckpts, 10)
    _save(ckpts, 20)
    (tmp_path / "latest").write_text("step_00000099\n")  # points at something that is not there
    assert ckpts.latest() == tag_for_step(20)


def test_no_temporary_files_are_left_by_the_atomic_writes(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=2)
    _save(ckpts, 10)
    assert not [p for p in Path(tmp_path).rglob(".*tmp*")]


def test_keep_last_k_deletes_old_checkpoints_but_never_latest_or_the_resumed_one(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=1)
    for step in (10, 20, 30):
        _save(ckpts, step)
    resumed = tag_for_step(10)
    assert ckpts.prune(protect={resumed}) == [tag_for_step(20)]
    assert ckpts.tags() == [resumed, tag_for_step(30)]
    _save(ckpts, 40)
    _save(ckpts, 50)
    # latest names 30 (say the pointer was rewound by hand): keep-1 still must not delete it
    (tmp_path / "latest").write_text(tag_for_step(30) + "\n")
    assert ckpts.prune(protect=set()) == [tag_for_step(10), tag_for_step(40)]
    assert ckpts.tags() == [tag_for_step(30), tag_for_step(50)]


def test_prune_removes_dead_saves_older_than_the_newest_complete_but_not_newer_ones(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=1)
    _save(ckpts, 10, complete=False)  # died long ago
    _save(ckpts, 20)
    _save(ckpts, 30, complete=False)  # may be a save in progress: leave it
    ckpts.prune(protect=set())
    assert ckpts.tags() == [tag_for_step(20), tag_for_step(30)]


def test_the_converter_resolves_latest_exactly_as_resume_does(tmp_path):
    """One rule for 'latest': a stale pointer (or none) falls back to the newest complete tag,
    for the converter as for the trainer; an incomplete tag is refused by name."""
    ckpts = CheckpointDir(tmp_path / "checkpoints", keep=5)
    _save(ckpts, 10)
    _save(ckpts, 20)
    incomplete = _save(ckpts, 30, complete=False)
    (ckpts.root / "latest").write_text("step_00000099\n")
    assert resolve_tag(tmp_path).name == ckpts.latest() == tag_for_step(20)  # run dir holding checkpoints/
    (ckpts.root / "latest").unlink()
    assert resolve_tag(ckpts.root).name == ckpts.latest() == tag_for_step(20)
    with pytest.raises(ConvertError, match="incomplete"):
        resolve_tag(ckpts.root, incomplete)
    with pytest.raises(ConvertError, match="not found"):
        resolve_tag(ckpts.root, "step_00000040")


def test_a_save_that_leaves_less_room_than_one_more_checkpoint_is_warned_about(tmp_path, monkeypatch):
    ckpts = CheckpointDir(tmp_path, keep=2)
    tag = _save(ckpts, 10)
    (ckpts.path(tag) / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"\0" * 3 * 2**20)
    size = sum(f.stat().st_size for f in ckpts.path(tag).rglob("*") if f.is_file())
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=size))  # room for less than 1.1x
    warning = ckpts.room_for_another(tag)
    assert warning and "only 3.0 MiB free" in warning and f"({tmp_path})" in warning and tag in warning
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2 * size))
    assert ckpts.room_for_another(tag) is None
