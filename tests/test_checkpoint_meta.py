"""meta.json's typed record (checkpoint/meta.py): it reads what main wrote before it existed,
writes the same keys back (plus its format), and names the key of every problem."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from janus_pretrain.checkpoint.meta import META_FORMAT, CheckpointMeta, Layout, MetaError, Progress
from janus_pretrain.config import batch_plan, config_from_dict, to_dict
from janus_pretrain.model_config import ModelConfig, architecture_differences, describe_differences

FIXTURE = Path(__file__).parent / "fixtures" / "main_b7316c0" / "checkpoints" / "step_00000003" / "meta.json"


def test_a_meta_json_of_main_before_the_record_reads_and_writes_back_the_same_keys():
    raw = json.loads(FIXTURE.read_text())
    meta = CheckpointMeta.read(FIXTURE)
    assert meta.layout == Layout(world_size=2, ep_size=2, zero_stage=2) and meta.progress.step == 3
    assert meta.model_config().d_model == 8 and len(meta.files) == 7
    again = json.loads(meta.to_json())
    assert again.pop("format") == META_FORMAT and again.pop("cp_size") == 1 and again == raw


def test_older_defaults_fill_only_their_keys_and_every_other_key_is_required():
    raw = json.loads(FIXTURE.read_text())
    older = CheckpointMeta.from_dict({k: v for k, v in raw.items() if k not in ("files", "train_seconds")}, "m.json")
    assert older.files is None and older.progress.train_seconds == 0.0
    for key in ("step", "world_size", "config", "vocab"):
        with pytest.raises(MetaError, match=rf"m.json: keys \['{key}'\] missing"):
            CheckpointMeta.from_dict({k: v for k, v in raw.items() if k != key}, "m.json")


def test_problems_name_the_key_and_the_file():
    raw = json.loads(FIXTURE.read_text())
    with pytest.raises(MetaError, match=r"m.json: 'ep_size' must be int"):
        CheckpointMeta.from_dict({**raw, "ep_size": "2"}, "m.json")
    with pytest.raises(MetaError, match=r"m.json: unknown keys \['extra'\]: written by a newer"):
        CheckpointMeta.from_dict({**raw, "extra": 1}, "m.json")
    with pytest.raises(MetaError, match="format 'janus-checkpoint-v9'"):
        CheckpointMeta.from_dict({**raw, "format": "janus-checkpoint-v9"}, "m.json")
    with pytest.raises(MetaError, match="not valid JSON"):
        CheckpointMeta.from_json("{", "m.json")


def test_of_run_records_the_run_and_a_nan_loss_survives_the_file():
    config = config_from_dict({"train": {"micro_batch": 2, "precision": "fp32"}, "data": {"seq_len": 64}}, "r.yaml")
    plan = batch_plan(config, 2)
    meta = CheckpointMeta.of_run(config, plan, Layout(2, 1, 2), Progress(step=5), data_streams=4)
    assert meta.config == to_dict(config) and meta.tokens_per_step == plan.tokens_per_step
    back = CheckpointMeta.from_json(meta.with_files({"a": "0" * 64}).to_json(), "m.json")
    assert back.progress.step == 5 and math.isnan(back.progress.last_loss) and back.data_streams == 4
    assert back.files == {"a": "0" * 64} and back.layout == meta.layout


def test_the_architecture_check_names_every_differing_key_and_ignores_runtime_fields():
    a, b = ModelConfig(d_model=16, n_heads=2, scan_chunk=8), ModelConfig(d_model=24, n_heads=4, kernels="reference")
    differences = architecture_differences(a, b)
    assert list(differences) == ["d_model", "n_heads"]
    assert describe_differences(differences) == "model.d_model: 16 there, 24 here; model.n_heads: 2 there, 4 here"


def test_cp_size_is_recorded_and_the_global_batch_counts_data_parallel_ranks():
    config = config_from_dict({"train": {"micro_batch": 2, "precision": "fp32"}, "data": {"seq_len": 64},
                               "parallel": {"cp_size": 2}}, "r.yaml")
    plan = batch_plan(config, 4)  # 4 ranks, 2 per sample: 2 data-parallel ranks x 2 samples x 64 bp
    meta = CheckpointMeta.of_run(config, plan, Layout(4, 1, 2, cp_size=2), Progress(), data_streams=None)
    back = CheckpointMeta.from_json(meta.to_json(), "m.json")
    assert back.layout == Layout(4, 1, 2, 2) and back.layout.data_ranks == 2
    assert back.tokens_per_step == plan.tokens_per_step == 2 * 2 * 64
    assert back.layout.describe() == "world 4 / ep 1 / ZeRO-2 / cp 2"
