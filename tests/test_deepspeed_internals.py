"""Every DeepSpeed internal the package relies on is still there (janus_pretrain/deepspeed_internals.py).

A DeepSpeed upgrade that moves one fails here with one line naming it, before a training run
would fail at its first checkpoint or resume.
"""
from __future__ import annotations

import pytest

from janus_pretrain import deepspeed_internals as ds


def test_every_deepspeed_internal_the_package_uses_is_present():
    missing = ds.missing_internals()
    assert not missing, "\n".join(missing)


def test_a_moved_internal_is_named_in_one_line(monkeypatch):
    monkeypatch.setattr(ds, "INTERNALS", ds.INTERNALS + (
        ("deepspeed.runtime.zero.stage_1_and_2.DeepSpeedZeroOptimizer", "bit16_groups_renamed", "attribute"),
        ("deepspeed.runtime.engine.DeepSpeedEngine", "no_such_moe_attribute", "read")))
    missing = ds.missing_internals()
    assert len(missing) == 2 and all("\n" not in line for line in missing)
    assert "DeepSpeedZeroOptimizer.bit16_groups_renamed is gone" in missing[0]
    assert "reading module.no_such_moe_attribute" in missing[1] and ds.CHECKED_VERSION in missing[1]


def test_a_live_engine_without_an_internal_stops_with_its_name():
    class Optimizer:
        bit16_groups = []

    class Engine:
        optimizer = Optimizer()

    with pytest.raises(RuntimeError, match="no 'round_robin_bit16_groups'"):
        ds.check_engine(Engine())
