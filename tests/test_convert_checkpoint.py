"""launch/convert_checkpoint.py on real DeepSpeed ZeRO-2 checkpoints written by the trainer.

Each run trains the same small Janus model (Mamba + attention + MoE) on 2 CPU ranks for 2 steps
(tests/engine_worker.py, which also saves every rank's final module weights). DeepSpeed's own
zero_to_fp32 fails on these MoE checkpoints; the converter rebuilds the fp32 master weights from
the optimizer partitions of every rank.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine_launch import REPO, logs, merged_weights, run, small_config
from hf_helpers import transformers_forward
from janus_pretrain.checkpoint.convert import ConvertError, convert_checkpoint, convert_to_export
from janus_pretrain.config import model_config_from_dict
from janus_pretrain.export import load_pretrained
from janus_pretrain.model import JanusForPretraining

STEPS = 2


def _train(base: Path, name: str, ep_size: int, precision: str = "fp32") -> Path:
    out = base / name
    config = small_config(out, train={"steps": STEPS, "precision": precision}, parallel={"ep_size": ep_size})
    codes = run(2, {"config": config}, out)
    assert codes == [0, 0], logs(out)
    return out


def _convert_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch" / "convert_checkpoint.py"), *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ep2_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("convert"), "ep2", ep_size=2)


def _ids() -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    return torch.randint(7, 12, (2, 96), generator=gen)  # A/C/G/T/N


def test_cli_export_equals_engine_weights_and_logits(ep2_run, tmp_path):
    """fp32 run with experts sharded over 2 ranks: every exported tensor equals the engine's final
    module weight (experts gathered from both ranks), so the logits agree exactly."""
    result = _convert_cli("--checkpoint", str(ep2_run / "checkpoints"), "--out", str(tmp_path / "export"))
    assert result.returncode == 0, result.stderr
    assert "fp32 master weights" in result.stdout
    exported = load_pretrained(tmp_path / "export")
    engine = merged_weights(ep2_run, 2)
    state = exported.state_dict()
    assert set(state) == set(engine) and any(".experts.3." in k for k in state)
    for key, value in engine.items():
        assert torch.equal(state[key], value), key
    in_engine = JanusForPretraining(exported.config)
    in_engine.load_state_dict(engine)
    with torch.no_grad():
        torch.testing.assert_close(exported(_ids()).logits, in_engine.eval()(_ids()).logits, rtol=0, atol=0)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["run"]["step"] == STEPS and config["run"]["ep_size"] == 2 and config["run"]["tokens_seen"] > 0
    assert f"step: {STEPS}" in (tmp_path / "export" / "README.md").read_text()


def test_transformers_logits_equal_our_loader(ep2_run, tmp_path):
    """The export of the ep_size 2 run, loaded by transformers where janus_pretrain cannot be
    imported (tests/hf_helpers.py), gives our loader's logits and states, to fp32 rounding."""
    pytest.importorskip("transformers")
    export = tmp_path / "export"
    convert_to_export(ep2_run / "checkpoints", export)
    out = transformers_forward(export, _ids(), tmp_path / "hf")
    ours = load_pretrained(export)
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], ours(_ids()).logits)
        torch.testing.assert_close(out["hidden"], ours.backbone(_ids()).hidden_states)


def test_training_moved_the_weights(ep2_run):
    """Guard against a vacuous comparison: the converted weights are not the initial ones (the
    engine initialises with torch.manual_seed(train.seed), rebuilt here the same way)."""
    trained = convert_checkpoint(ep2_run / "checkpoints").state
    assert not any(t.requires_grad for t in trained.values())
    meta = json.loads((ep2_run / "checkpoints" / f"step_{STEPS:08d}" / "meta.json").read_text())
    torch.manual_seed(meta["config"]["train"]["seed"])
    initial = JanusForPretraining(model_config_from_dict(meta["config"]["model"])).state_dict()
    moved = [k for k, v in initial.items() if not torch.equal(v, trained[k])]
    assert len(moved) > len(trained) // 2
    assert "lm_head.weight" in moved and any(".experts.3." in k for k in moved)


def test_refusals(ep2_run, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    result = _convert_cli("--checkpoint", str(ep2_run / "checkpoints"), "--out", str(out))
    assert result.returncode == 2 and "already exists" in result.stderr
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  d_model: 32\n")
    result = _convert_cli("--checkpoint", str(ep2_run / "checkpoints"), "--out", str(tmp_path / "x"),
                          "--config", str(other))
    assert result.returncode == 2 and "model.d_model: 16 there, 32 here" in result.stderr
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConvertError, match="not found"):
        convert_checkpoint(ep2_run / "checkpoints", tag="step_00000999")
    # how the model runs (kernels, recomputation) may differ from the checkpoint's; what it computes may not
    trained = model_config_from_dict(json.loads((ep2_run / "checkpoints" / f"step_{STEPS:08d}" / "meta.json")
                                                .read_text())["config"]["model"])
    convert_checkpoint(ep2_run / "checkpoints", expect_model=replace(trained, kernels="auto", activation_checkpointing="layer"))
    with pytest.raises(ConvertError, match="model.num_experts: 4 there, 8 here"):
        convert_checkpoint(ep2_run / "checkpoints", expect_model=replace(trained, num_experts=8))


def test_incomplete_checkpoint_is_refused(ep2_run, tmp_path):
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(ep2_run / "checkpoints", copy)
    tag = copy / f"step_{STEPS:08d}"
    (tag / "COMPLETE").unlink()
    with pytest.raises(ConvertError, match="incomplete"):
        convert_checkpoint(copy)
    (tag / "COMPLETE").write_text("x")
    (tag / "rank_1.pt").unlink()
    with pytest.raises(ConvertError, match="rank_1.pt"):
        convert_checkpoint(copy)


def test_corrupted_partition_is_detected(ep2_run, tmp_path):
    """A partition that does not match the saved training weights aborts the conversion."""
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(ep2_run / "checkpoints", copy)
    zero_file = copy / f"step_{STEPS:08d}" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    blob = torch.load(zero_file, weights_only=False)
    with torch.no_grad():
        blob["optimizer_state_dict"]["single_partition_of_fp32_groups"][0][5] += 1.0
    torch.save(blob, zero_file)
    with pytest.raises(ConvertError, match="zero_pp_rank_1_mp_rank_00_optim_states.pt: sha256 mismatch"):
        convert_checkpoint(copy)  # first line of defence: the digest recorded at save
    with pytest.raises(ConvertError, match="disagree with the saved training weights"):
        convert_checkpoint(copy, verify=False)  # second: the rebuilt weights against the training copies


def test_ep1_and_ep2_exports_are_identical(ep2_run, tmp_path):
    """The same training with experts replicated (ep_size 1: expert groups partitioned over both
    data-parallel ranks) or sharded (ep_size 2: one partition per ep rank) exports the same model,
    to fp32 reduction-order rounding (the tolerance of the engine's own EP test)."""
    ep1 = _train(tmp_path, "ep1", ep_size=1)
    a, b = convert_checkpoint(ep1 / "checkpoints").state, convert_checkpoint(ep2_run / "checkpoints").state
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=lambda m: f"{key}: {m}")


@pytest.mark.slow
def test_bf16_run_exports_fp32_master_weights(tmp_path):
    """bf16 training: the export holds the fp32 master weights, which round to the bf16 weights
    the engine computed with but carry more precision than them."""
    out = _train(tmp_path, "bf16", ep_size=2, precision="bf16")
    converted = convert_checkpoint(out / "checkpoints")
    engine = merged_weights(out, 2)  # the engine's bf16 module weights, as float
    more_precise = 0
    for key, value in engine.items():
        master = converted.state[key]
        assert master.dtype == torch.float32
        assert torch.equal(master.to(torch.bfloat16).float(), value), key
        more_precise += int(not torch.equal(master, value))
    assert more_precise > len(engine) // 2
    assert converted.run["train_precision"] == "bf16" and "fp32 master" in converted.precision_note


@pytest.mark.slow
def test_four_ranks_expert_parallel_two(tmp_path):
    """4 data-parallel ranks with ep_size 2: dense groups in 4 partitions, each ep rank's expert
    groups in 2 (its expert-data-parallel group); the export equals the engine's final weights."""
    out = tmp_path / "dp4ep2"
    config = small_config(out, train={"steps": STEPS, "precision": "fp32"}, parallel={"ep_size": 2})
    codes = run(4, {"config": config}, out, timeout=600)
    assert codes == [0] * 4, logs(out)
    converted = convert_checkpoint(out / "checkpoints")
    layouts = [torch.load(out / "checkpoints" / f"step_{STEPS:08d}" / f"rank_{r}.pt", weights_only=False)["zero_layout"]
               for r in range(4)]
    assert {g["partition_count"] for g in layouts[0] if g["kind"] == "dense"} == {4}
    assert {g["partition_count"] for g in layouts[0] if g["kind"] == "moe"} == {2}
    engine = merged_weights(out, 4)
    assert set(engine) == set(converted.state)
    for key, value in engine.items():
        assert torch.equal(converted.state[key], value), key


def test_a_decoy_zero_file_is_one_line_naming_the_rank_file(tmp_path):
    """Issue 27, tracebacks: rank_0.pt naming DeepSpeed's model states as its ZeRO file (digests fixed
    up) was a KeyError; the partition read is the one DeepSpeed names for the rank, and another
    recorded name is refused: one line, from the CLI too."""
    import shutil

    from janus_pretrain.digests import file_digest

    fixture = REPO / "tests" / "fixtures" / "main_b7316c0" / "checkpoints"
    checkpoints = Path(shutil.copytree(fixture, tmp_path / "checkpoints"))
    folder = checkpoints / "step_00000003"
    own = torch.load(folder / "rank_0.pt", weights_only=True)
    own["zero_file"] = "mp_rank_00_model_states.pt"
    torch.save(own, folder / "rank_0.pt")
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["rank_0.pt"] = file_digest(folder / "rank_0.pt")
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConvertError, match=r"rank_0.pt: records zero_file 'mp_rank_00_model_states.pt', but "
                                           r"DeepSpeed reads 'zero_pp_rank_0_mp_rank_00_optim_states.pt'"):
        convert_checkpoint(checkpoints)
    from janus_pretrain.commands.convert import main

    assert main(["--checkpoint", str(checkpoints), "--out", str(tmp_path / "export")]) == 2
    assert not (tmp_path / "export").exists()
