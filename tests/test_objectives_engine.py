"""Every objective through the real engine: 2 CPU ranks, ZeRO-2, expert parallelism 2, layer
activation checkpointing, then checkpoint -> export -> load; mlm also resumed exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine_launch import logs, merged_weights, metrics, run, small_config
from janus_pretrain.checkpoint.convert import convert_to_export
from janus_pretrain.config import model_config_from_dict
from janus_pretrain.downstream.variants import Variant, VariantError, score_variants
from janus_pretrain.export import load_backbone, load_pretrained
from janus_pretrain.model import JanusForPretraining

STEPS = 4
_RUNS: dict[str, Path] = {}


def _config(out: Path, objective: str) -> dict:
    return small_config(out, train={"steps": STEPS}, parallel={"ep_size": 2, "zero_stage": 2},
                        model={"objective": objective, "activation_checkpointing": "layer"})


def _trained(tmp_path_factory, objective: str) -> Path:
    if objective not in _RUNS:
        out = tmp_path_factory.mktemp(f"objective_{objective}")
        codes = run(2, {"config": _config(out, objective)}, out)
        assert codes == [0, 0], logs(out)
        _RUNS[objective] = out
    return _RUNS[objective]


def _ids() -> torch.Tensor:
    return torch.randint(7, 11, (2, 48), generator=torch.Generator().manual_seed(2))


# clm is slow: its loss is unit-tested in test_objectives.py, and janus and mlm cover the ZeRO-2 + EP path
@pytest.mark.parametrize("objective", ["janus", "mlm", pytest.param("clm", marks=pytest.mark.slow)])
def test_trains_under_zero2_expert_parallel_and_exports(objective, tmp_path_factory, tmp_path):
    out = _trained(tmp_path_factory, objective)
    steps = metrics(out)
    assert len(steps) == STEPS and all(not m["skipped"] for m in steps)
    assert steps[-1]["loss"] < steps[0]["loss"], steps
    log = (out / "log_rank0.txt").read_text()
    assert f"objective {objective}: " in log and " parameters, " in log

    export = tmp_path / "export"
    convert_to_export(out / "checkpoints", export)
    recorded = json.loads((export / "config.json").read_text())["model"]["objective"]
    assert recorded == objective and f"objective: {objective}" in (export / "README.md").read_text()
    loaded = load_pretrained(export)
    assert loaded.config.objective == objective
    # the export computes what the trained weights (every expert, from both ranks) compute
    reference = JanusForPretraining(model_config_from_dict(_config(out, objective)["model"]))
    reference.load_state_dict(merged_weights(out, 2), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(_ids()).logits, reference.eval()(_ids()).logits, rtol=1e-5, atol=1e-6)
    # downstream: the backbone serves finetuning and embeddings for every objective ...
    assert load_backbone(export)(_ids()).hidden_states.shape == (2, 48, 16)
    # ... but zero-shot variant scoring is defined for the janus read-out only
    if objective != "janus":
        with pytest.raises(VariantError, match=f"objective {objective}"):
            score_variants(loaded, tmp_path / "unused.fa", [Variant("c", 5, "A", "C", "test")])


def test_export_without_objective_loads_as_janus(tmp_path_factory, tmp_path):
    out = _trained(tmp_path_factory, "janus")
    export = tmp_path / "export"
    convert_to_export(out / "checkpoints", export)
    config_path = export / "config.json"
    config = json.loads(config_path.read_text())
    del config["model"]["objective"]  # as written before objectives existed
    config_path.write_text(json.dumps(config))
    loaded = load_pretrained(export)
    assert loaded.config.objective == "janus"
    with torch.no_grad():
        assert torch.isfinite(loaded(_ids()).logits).all()


# slow: the RNG and data state a resume restores are the objective's own only in the masking draw;
# tests/test_engine_resume.py resumes the janus objective bitwise in the default suite
@pytest.mark.slow
def test_mlm_resumes_exactly_after_preemption(tmp_path_factory, tmp_path):
    """The masks are keyed by (seed, sample), not by the RNG state, so a preempted and resumed mlm
    run has exactly the losses and weights of the uninterrupted one."""
    straight = _trained(tmp_path_factory, "mlm")
    out = tmp_path / "resumed"
    spec = {"config": _config(out, "mlm")}
    assert run(2, {**spec, "preempt_at": 2}, out) == [75, 75], logs(out)
    assert run(2, spec, out) == [0, 0], logs(out)
    assert [m["loss"] for m in metrics(out)] == [m["loss"] for m in metrics(straight)]
    weights, expected = merged_weights(out, 2), merged_weights(straight, 2)
    for key, value in expected.items():
        assert torch.equal(value, weights[key]), key
