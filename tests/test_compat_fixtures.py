"""Checkpoints and exports written by released code still resume and load, with the same numbers.

The fixtures (tests/fixtures/README.md) were written by main at b7316c0; their expected values
were recorded by that code. Resuming continues bitwise (the loss of step 4 is the recorded one),
the export's logits are bitwise the recorded ones, and converting the old checkpoint again gives
the weights of the old export.
"""
from __future__ import annotations

import json
import shutil

import torch

from compat_fixtures import STEPS, fixture_config, probe_ids
from engine_launch import REPO, logs, metrics, run

FIXTURE = REPO / "tests" / "fixtures" / "main_b7316c0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def test_old_checkpoint_resumes_and_its_next_step_has_the_recorded_loss(tmp_path):
    shutil.copytree(FIXTURE / "checkpoints", tmp_path / "checkpoints")
    codes = run(2, {"config": fixture_config(tmp_path, STEPS + 1)}, tmp_path)
    assert codes == [0, 0], logs(tmp_path)
    assert "resumed from" in (tmp_path / "log_rank0.txt").read_text()
    steps = metrics(tmp_path)
    assert [m["step"] for m in steps] == [STEPS + 1]
    assert steps[0]["loss"] == EXPECTED["resumed_step_loss"]


def test_old_export_loads_with_the_recorded_logits():
    from janus_pretrain.export import load_pretrained

    model = load_pretrained(FIXTURE / "export")
    with torch.no_grad():
        logits = model(probe_ids()).logits
    # bitwise on the machine that recorded them; another CPU (SIMD width) rounds matmuls differently:
    # measured 3.0e-8 on this machine, so a float32-rounding tolerance, far below any real change
    torch.testing.assert_close(logits, torch.load(FIXTURE / "logits.pt", weights_only=True)["logits"],
                               rtol=0, atol=1e-6)


def test_old_checkpoint_converts_to_the_weights_of_the_old_export():
    from safetensors.torch import load_file

    from janus_pretrain.checkpoint.convert import convert_checkpoint

    converted = convert_checkpoint(FIXTURE / "checkpoints")
    exported = load_file(str(FIXTURE / "export" / "model.safetensors"))
    assert converted.run["step"] == STEPS and set(converted.state) == set(exported)
    for name, tensor in exported.items():
        assert torch.equal(converted.state[name], tensor), name
