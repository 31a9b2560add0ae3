"""Write the compatibility fixtures: a tiny ZeRO-2 checkpoint, its export and the values they must reproduce.

    .venv/bin/python tests/compat_fixtures.py tests/fixtures/main_<commit>

Runs tests/engine_worker.py on 2 ranks (ZeRO-2, expert parallel 2, fp32, synthetic data) for
STEPS steps, converts the last checkpoint with `janus convert`, resumes it for one more step and
records that step's loss and the export's logits on fixed ids (expected.json, logits.pt).
tests/test_compat_fixtures.py checks that the code of today still resumes and loads them. A new
checkpoint or export format version gets a new fixture directory written by this script; the old
ones stay, for as long as the format they were written in is supported.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent))

from engine_launch import REPO, logs, metrics, run, small_config  # noqa: E402

STEPS = 3
# smaller than the engine tests' model: the fixture is committed (every layer kind, two experts per EP rank)
MODEL = {"d_model": 8, "n_layers": 2, "attn_layer_period": 2, "attn_layer_offset": 0, "expert_layer_period": 2,
         "expert_layer_offset": 1, "num_experts": 4, "top_k": 2, "intermediate_size": 8, "n_heads": 2,
         "d_state": 2, "d_conv": 2, "expand": 1, "kernels": "reference", "scan_chunk": 16}


def fixture_config(run_dir: Path, steps: int) -> dict:
    config = small_config(run_dir, data={"seq_len": 32}, train={"steps": steps}, parallel={"ep_size": 2},
                          checkpoint={"every": 0, "keep": 1})
    config["model"] = dict(MODEL)
    return config


def probe_ids() -> torch.Tensor:
    """The ids whose logits the export must reproduce: (2, 24) of A/C/G/T/N."""
    return torch.randint(7, 12, (2, 24), generator=torch.Generator().manual_seed(11))


def main(out: Path) -> None:
    from janus_pretrain.export import load_pretrained

    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    codes = run(2, {"config": fixture_config(work, STEPS)}, work)
    assert codes == [0, 0], logs(work)
    shutil.copytree(work / "checkpoints", out / "checkpoints", ignore=shutil.ignore_patterns("zero_to_*.py"))
    subprocess.run([sys.executable, "-m", "janus_pretrain", "convert", "--checkpoint", str(out / "checkpoints"),
                    "--out", str(out / "export")], check=True, cwd=REPO)
    resumed = out / "resumed"
    shutil.copytree(work / "checkpoints", resumed / "checkpoints")
    codes = run(2, {"config": fixture_config(resumed, STEPS + 1)}, resumed)
    assert codes == [0, 0], logs(resumed)
    steps = metrics(resumed)
    assert [m["step"] for m in steps] == [STEPS + 1], steps
    model = load_pretrained(out / "export")
    with torch.no_grad():
        logits = model(probe_ids()).logits
    torch.save({"logits": logits}, out / "logits.pt")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    (out / "expected.json").write_text(json.dumps({
        "commit": commit, "steps": STEPS, "losses": [m["loss"] for m in metrics(work)],
        "resumed_step_loss": steps[0]["loss"], "model": MODEL}, indent=2) + "\n")
    shutil.rmtree(work)
    shutil.rmtree(resumed)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
