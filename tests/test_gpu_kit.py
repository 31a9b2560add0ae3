"""The GPU kit of bench/gpu/ (issue 12, docs/gpu.md), as far as a CPU machine can check it:
stage.sh resolves its wheel list from this venv without network, check.sh --dry-run runs every
stage at tiny sizes; and on a GPU, one DeepSpeed ZeRO-2 bf16 training step."""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

# what the GPU image lacks (docs/gpu.md); each must be staged at the version tested here
MISSING_ON_THE_IMAGE = ["deepspeed", "hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
                        "webdataset", "braceexpand", "pyfaidx"]


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


def test_stage_list_pins_this_venvs_versions_and_prints_the_device_call():
    proc = subprocess.run(["bash", str(REPO / "bench/gpu/stage.sh"), "--list"], capture_output=True, text=True,
                          env=_env(PIP_NO_INDEX="1"), timeout=300)  # --list must not need an index
    assert proc.returncode == 0, proc.stderr
    pins = dict(line.split("==") for line in proc.stdout.splitlines() if "==" in line and " " not in line)
    for name in MISSING_ON_THE_IMAGE:
        assert pins.get(name) == importlib.metadata.version(name), name
    assert 'run(command="bash bench/gpu/check.sh", carry=[".gpu-wheels"], timeout_s=560)' in proc.stdout
    ignored = subprocess.run(["git", "check-ignore", "-q", ".gpu-wheels/x.whl"], cwd=REPO)
    assert ignored.returncode == 0, ".gpu-wheels/ must be git-ignored (it travels through carry)"


def test_stage_refuses_a_python_without_deepspeed():
    proc = subprocess.run(["bash", str(REPO / "bench/gpu/stage.sh"), "--list"], capture_output=True, text=True,
                          env=_env(PYTHON="/bin/false"), timeout=60)
    assert proc.returncode == 2 and "cannot import deepspeed" in proc.stderr


def test_check_dry_run_runs_every_stage_on_cpu(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "bench/gpu/check.sh"), "--dry-run"], capture_output=True, text=True,
                          env=_env(OUT=str(tmp_path)), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = {s["stage"]: s for s in map(json.loads, (tmp_path / "stages.jsonl").read_text().splitlines())}
    assert list(stages) == ["env", "cuda-tests", "scale-131k", "scale-1m", "scale-2m"]
    log = (tmp_path / "check.log").read_text()
    assert all(s["rc"] == 0 for s in stages.values()), log[-3000:]
    assert json.loads((tmp_path / "env.json").read_text())["torch"] == torch.__version__
    summary = json.loads((tmp_path / "summary.json").read_text())
    for label in ("131k", "1m", "2m"):
        row = summary["scale"][label]
        assert row["status"] == "done" and math.isfinite(row["loss"]) and row["predicted_bytes"] > 0, row
        assert row["device"] == "cpu" and row["fusion"] == "pieces" and row["predicted_backend"] == "reference"
    assert " cuda" in log and "collected" in log  # the cuda-marked tests were collected, not run


@pytest.mark.cuda
def test_one_deepspeed_zero2_bf16_step_on_cuda(tmp_path):
    out = tmp_path / "scale.jsonl"
    proc = subprocess.run([sys.executable, str(REPO / "bench/gpu/scale_step.py"), "--config", "configs/tiny.yaml",
                           "--seq-len", "1024", "--steps", "1", "--set", "train.precision=bf16",
                           "--out", str(out), "--label", "tiny"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    end = [e for e in map(json.loads, out.read_text().splitlines()) if e["event"] == "end"][0]
    assert end["device"] == "cuda" and end["precision"] == "bf16" and math.isfinite(end["loss"])
    assert end["max_memory_allocated"] > 0 and end["predicted_bytes"] > 0
