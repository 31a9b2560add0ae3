"""The GPU kit of bench/gpu/ (issues 12 and 24, docs/gpu.md), as far as a CPU machine can check it:
stage.sh resolves its wheel list from this venv without network, check.sh --dry-run runs every
stage at tiny sizes, a stage timeout leaves pytest's JUnit XML, sm90_setup.py leaves a setup.py
that parses and names sm_90 alone; and on a GPU, one DeepSpeed ZeRO-2 bf16 training step."""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap

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
    assert 'run(command="bash bench/gpu/check.sh", carry=[".gpu-wheels"], timeout_s=420)' in proc.stdout
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
    assert list(stages) == ["env", "cuda-tests", "scale-131k", "scale-1m-cuda", "scale-1m-torch", "scale-2m"]
    log = (tmp_path / "check.log").read_text()
    assert all(s["rc"] == 0 for s in stages.values()), log[-3000:]
    assert json.loads((tmp_path / "env.json").read_text())["torch"] == torch.__version__
    summary = json.loads((tmp_path / "summary.json").read_text())
    for label in ("131k", "1m-cuda", "1m-torch", "2m"):
        row = summary["scale"][label]
        assert row["status"] == "done" and math.isfinite(row["loss"]) and row["predicted_bytes"] > 0, row
        assert row["device"] == "cpu" and row["fusion"] == "pieces" and row["predicted_backend"] == "reference"
    # the torch fallback set: no package kernels, the causal pieces for the fusion (torch-cuda on a GPU)
    assert summary["scale"]["1m-torch"]["kernel_set"] == "torch"
    assert " cuda" in log and "collected" in log  # the cuda-marked tests were collected, not run


# the shape of mamba-ssm 2.3.2.post1's and causal-conv1d 1.7.0's nvcc flag code (CUDA 13 branch)
SETUP_PY = textwrap.dedent("""
    cc_flag = []
    if not SKIP_CUDA_BUILD:
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_80,code=sm_80")
        if bare_metal_version >= Version("11.8"):
            cc_flag.append("-gencode")
            cc_flag.append("arch=compute_90,code=sm_90")
        if bare_metal_version >= Version("12.8"):
            cc_flag.append("-gencode")
            cc_flag.append("arch=compute_100,code=sm_100")
        if bare_metal_version >= Version("13.0"):
            cc_flag.append("-gencode")
            cc_flag.append("arch=compute_121,code=sm_121")
    nvcc = ["-O3", "-lineinfo", "--use_fast_math"] + cc_flag
""")


def _sm90(path, *flags):
    return subprocess.run([sys.executable, str(REPO / "bench/gpu/sm90_setup.py"), str(path), *flags],
                          capture_output=True, text=True, timeout=60)


def test_sm90_setup_keeps_only_sm90_and_the_file_still_parses(tmp_path):
    setup = tmp_path / "setup.py"
    setup.write_text(SETUP_PY)
    unpatched = _sm90(setup, "--check-only")
    assert unpatched.returncode == 1 and "expected only 90" in unpatched.stderr and "-lineinfo" in unpatched.stderr
    assert _sm90(setup).returncode == 0
    namespace = {"SKIP_CUDA_BUILD": False, "bare_metal_version": 13.0, "Version": float}
    exec(compile(setup.read_text(), str(setup), "exec"), namespace)  # empty if-blocks would not compile
    assert namespace["nvcc"] == ["-O3", "--use_fast_math", "-gencode", "arch=compute_90,code=sm_90"]
    assert _sm90(setup, "--check-only").returncode == 0


def test_sm90_setup_fails_when_an_architecture_is_left(tmp_path):
    setup = tmp_path / "setup.py"
    # an arch flag in a form the rewrite does not know: the check must catch it, not pass
    setup.write_text(SETUP_PY + 'cc_flag += ["-gencode", "arch=compute_100,code=sm_100"]\n')
    proc = _sm90(setup)
    assert proc.returncode == 1 and "['90', '100']" in proc.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("if True:\n")
    assert _sm90(broken).returncode == 2


def test_a_stage_timeout_still_leaves_the_junit_xml(tmp_path):
    # check.sh's stages run `timeout -s INT`: pytest, interrupted, reports what ran; also when the
    # script itself was started with SIGINT ignored (a background job), as timeout resets it
    (tmp_path / "test_slow.py").write_text("import time\ndef test_fast():\n    pass\n"
                                           "def test_slow():\n    time.sleep(60)\n")
    xml = tmp_path / "result.xml"
    proc = subprocess.run(["timeout", "-s", "INT", "--kill-after=20", "5", sys.executable, "-m", "pytest", "-q",
                           "-p", "no:cacheprovider", str(tmp_path / "test_slow.py"), f"--junitxml={xml}"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.returncode == 124, proc.stdout[-2000:]
    assert 'name="test_fast"' in xml.read_text()


def _gpu_call_stages() -> tuple[int, dict[str, int]]:
    """check.sh's default budget and the stage limits of its GPU branch (not the dry run's)."""
    text = (REPO / "bench/gpu/check.sh").read_text()
    budget = int(re.search(r"CHECK_BUDGET_S:-\$\(\( DRY \? \d+ : (\d+) \)\)", text).group(1))
    real = text.split("\nelse\n", 1)[1].split("\nfi\n", 1)[0]
    wheels = re.search(r"stage wheels (\d+)", text).group(1)
    stages = {"wheels": int(wheels), **{m[0]: int(m[1]) for m in re.findall(r"stage (\S+) (\d+) ", real)}}
    return budget, stages


def test_the_gpu_call_budget_adds_up_and_the_docs_name_the_same_call():
    budget, stages = _gpu_call_stages()
    assert list(stages) == ["wheels", "cuda-tests", "scale-131k", "scale-1m-cuda", "scale-1m-torch", "scale-2m"]
    assert stages["scale-2m"] == 0  # 0: all the time left
    env_limit = 20
    text = (REPO / "bench/gpu/check.sh").read_text()
    assert f"stage env {env_limit} " in text
    reserve = 15 + 15  # SUMMARY_RESERVE + KILL_AFTER
    before_2m = sum(stages.values()) + env_limit
    assert before_2m + reserve + 25 <= budget, (before_2m, budget)  # scale-2m gets >= 25 s
    doc = (REPO / "docs/gpu.md").read_text()
    call = re.search(r'run\(command="bash bench/gpu/check.sh", carry=\["\.gpu-wheels"\], timeout_s=(\d+)\)', doc)
    assert call, "docs/gpu.md must name the exact device call"
    assert budget + 30 <= int(call.group(1)) <= 420  # the call's limit covers the script and the transfers
    rerun = re.search(r"CHECK_BUDGET_S=(\d+) bash bench/gpu/check.sh --only STAGE,\.\.\.\", carry=\[\"\.gpu-wheels\"\], "
                      r"timeout_s=(\d+)", doc)
    assert rerun and int(rerun.group(1)) + 20 <= int(rerun.group(2))
    total = 120 + int(call.group(1)) + int(rerun.group(2))  # a start, the call, a warm rerun
    assert total <= 900 - 120, total  # and 120 s spare, as the doc's table says
    assert f"**at most {total}, of 900**" in doc


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
