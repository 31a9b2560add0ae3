"""What a resume takes from the run config (unit level; the multi-rank runs are in
test_checkpoint_integrity.py): a changed data section is one line naming the keys."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from janus_pretrain.checkpoint.layout import CheckpointError
from janus_pretrain.checkpoint.meta import CheckpointMeta, Layout, Progress
from janus_pretrain.config import config_from_dict, to_dict
from janus_pretrain.engine.resume import check_architecture, load_data_state


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
