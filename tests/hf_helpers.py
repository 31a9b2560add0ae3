"""Run an export through Hugging Face transformers the way a user without janus_pretrain would:
a fresh interpreter in which `import janus_pretrain` fails (the package is blocked in sys.modules,
since an editable install would otherwise find it from any directory), the repository taken out
of PYTHONPATH, the working directory and HF_HOME in a temporary directory, HF_HUB_OFFLINE=1.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = r"""
import json, sys
sys.modules["janus_pretrain"] = None  # an editable install would be found from any directory
try:
    import janus_pretrain
    raise SystemExit("janus_pretrain is importable: the test would not show that exports stand alone")
except ImportError:
    pass
import torch
import transformers
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

spec = json.load(open(sys.argv[1]))
export, ids = spec["export"], torch.load(spec["ids"])
head, info = AutoModelForMaskedLM.from_pretrained(export, trust_remote_code=True, output_loading_info=True)
assert not info["missing_keys"] and not info["unexpected_keys"], info
assert not head.training
backbone = AutoModel.from_pretrained(export, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(export, trust_remote_code=True)
out = {"transformers": transformers.__version__, "head_class": type(head).__name__, "backbone_class": type(backbone).__name__,
       "token_ids": [tokenizer(text)["input_ids"] for text in spec["texts"]]}
with torch.no_grad():
    out["logits"] = head(ids).logits
    out["hidden"] = backbone(ids).last_hidden_state
if spec.get("save_to"):
    head.save_pretrained(spec["save_to"])
    tokenizer.save_pretrained(spec["save_to"])
    again = AutoModelForMaskedLM.from_pretrained(spec["save_to"], trust_remote_code=True)
    with torch.no_grad():
        out["saved_logits"] = again(ids).logits
    out["saved_token_ids"] = [AutoTokenizer.from_pretrained(spec["save_to"], trust_remote_code=True)(text)["input_ids"]
                              for text in spec["texts"]]
torch.save(out, spec["out"])
"""


def transformers_forward(export: Path, ids: torch.Tensor, work: Path, texts: tuple[str, ...] = (),
                         save_to: Path | None = None) -> dict:
    """logits (head), hidden (backbone) and the tokenizer's ids of `texts`, computed by transformers
    from `export` alone; with save_to, also the logits and ids after save_pretrained/from_pretrained."""
    work.mkdir(parents=True, exist_ok=True)
    torch.save(ids, work / "ids.pt")
    spec = {"export": str(export), "ids": str(work / "ids.pt"), "texts": list(texts), "out": str(work / "out.pt"),
            "save_to": str(save_to) if save_to else None}
    (work / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ)
    paths = [p for p in env.pop("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
    if paths:  # e.g. another transformers version under test; never the repository
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(work / "hf_home"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(work / "spec.json")], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(work / "out.pt")
