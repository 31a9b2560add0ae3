"""What a resume takes from the run config (unit level; the multi-rank runs are in
test_checkpoint_integrity.py): a changed data section is one line naming the keys."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from janus_pretrain.checkpoint.layout import CheckpointError
from janus_pretrain.checkpoint.meta import CheckpointMeta, Layout, Progress
from janus_pretrain.config import batch_plan, config_from_dict, to_dict
from janus_pretrain.engine.resume import check_architecture, check_batch, load_data_state


def _meta(config) -> CheckpointMeta:
    return CheckpointMeta(config=to_dict(config), progress=Progress(), layout=Layout(1, 1, 2), precision="fp32",
                          micro_batch=1, grad_accum=1)


class _Stream:
    def load_state_dict(self, state):
        raise ValueError("cannot resume the data stream exactly: 'fingerprint' was A and is B now\nmore")


def test_changed_data_section_is_one_line_naming_the_keys(tmp_path):
    old = config_from_dict({"data": {"seq_len": 512}}, "old.yaml")
    new = config_from_dict({"data": {"seq_len": 1024}}, "new.yaml")
    restored = SimpleNamespace(components={"data": {}}, all_components=None, meta=_meta(old), folder=Path("ck/step_00000002"))
    with pytest.raises(CheckpointError) as info:
        load_data_state(_Stream(), restored, new)
    message = str(info.value)
    assert "\n" not in message and "data.seq_len: 512 -> 1024" in message and "--resume none" in message


def test_runtime_knobs_may_change_but_not_the_architecture():
    saved = config_from_dict({"model": {"d_model": 64, "kernels": "reference"}}, "a.yaml")
    meta = _meta(saved)
    check_architecture(Path("ck"), meta, config_from_dict({"model": {"d_model": 64, "scan_chunk": 8}}, "b.yaml"))
    with pytest.raises(CheckpointError, match="model.d_model: 64 there, 72 here"):
        check_architecture(Path("ck"), meta, config_from_dict({}, "c.yaml"))


def _cp_config(cp: int):
    return config_from_dict({"data": {"seq_len": 64}, "train": {"micro_batch": 2, "precision": "fp32"},
                             "parallel": {"cp_size": cp}}, f"cp{cp}.yaml")


def test_a_cp_change_keeps_the_samples_per_step_and_the_data_position_per_data_parallel_rank():
    """Written on 4 ranks, cp 2 (2 data-parallel ranks x 2 samples, 4 slot streams)."""
    meta = CheckpointMeta(config=to_dict(_cp_config(2)), progress=Progress(), layout=Layout(4, 1, 2, 2),
                          precision="fp32", micro_batch=2, grad_accum=1, data_streams=4)
    folder = Path("ck/step_00000002")
    for world, cp in ((2, 1), (8, 4)):  # 2 data-parallel ranks again: continues
        check_batch(folder, meta, Layout(world, 1, 2, cp), batch_plan(_cp_config(cp), world))
    with pytest.raises(CheckpointError, match=r"4 slots \(data.streams\), which 3 data-parallel ranks \(6 ranks / "
                                              r"cp_size 2\) cannot share evenly"):
        check_batch(folder, meta, Layout(6, 1, 2, 2), batch_plan(_cp_config(2), 6))
    with pytest.raises(CheckpointError, match=r"used 256 tokens per optimizer step \(2 data-parallel ranks x 1 "
                                              r"accumulation\), this run 512 \(4 data-parallel ranks x 1\)"):
        check_batch(folder, meta, Layout(4, 1, 2, 1), batch_plan(_cp_config(1), 4))

    # the data states of a CP group's ranks are the same position: one per data-parallel rank is merged
    class Merging:
        def global_state(self, states):
            return [s["rank"] for s in states]

        def load_state_dict(self, state):
            self.loaded = state
    ranks = [{"data": {"rank": rank // 2}} for rank in range(4)]  # rank_<R>.pt of a cp 2 run, in rank order
    stream = Merging()
    load_data_state(stream, SimpleNamespace(all_components=ranks, meta=meta, folder=folder), _cp_config(1))
    assert stream.loaded == [0, 1]
