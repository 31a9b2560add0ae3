"""Export directories: exact round trip, logits parity, refusals, and loading without DeepSpeed."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from downstream_helpers import SMALL, random_dna, small_export, small_model
from janus_pretrain.export import ExportError, load_pretrained, save_pretrained, write_export
from janus_pretrain.tokenizer import TOKENIZER_VERSION, encode


def test_round_trip_is_exact_and_logits_match(tmp_path):
    model, export = small_export(tmp_path)
    loaded = load_pretrained(export)
    original, restored = model.state_dict(), loaded.state_dict()
    assert set(original) == set(restored)
    for key, value in original.items():
        assert torch.equal(value, restored[key]), key
    ids = torch.stack([encode("ACGTTGCAAGCTNACGGATCCA" * 3), encode(random_dna(66, seed=5))])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
        # and the model is not trivially constant: positions disagree
        assert loaded(ids).logits.std(dim=1).min() > 0


def test_config_json_and_model_card(tmp_path):
    _, export = small_export(tmp_path)
    config = json.loads((export / "config.json").read_text())
    assert config["tokenizer_version"] == TOKENIZER_VERSION
    assert config["model"]["d_model"] == SMALL.d_model and config["model"]["num_experts"] == SMALL.num_experts
    assert config["weights_dtype"] == "float32"
    card = (export / "README.md").read_text()
    assert "load_pretrained" in card and TOKENIZER_VERSION in card
    assert not list(tmp_path.glob(".export.tmp-*"))  # the temporary build directory is gone


def test_refuses_existing_output_unless_overwrite(tmp_path):
    model, export = small_export(tmp_path)
    with pytest.raises(ExportError, match="already exists"):
        save_pretrained(model, export)
    other = small_model(seed=1)
    save_pretrained(other, export, overwrite=True)
    loaded = load_pretrained(export)
    assert torch.equal(loaded.lm_head.weight, other.lm_head.weight)


def test_refuses_weights_that_do_not_fit_the_config(tmp_path):
    model = small_model()
    state = dict(model.state_dict())
    del state["lm_head.weight"]
    with pytest.raises(ExportError, match="missing.*lm_head.weight"):
        write_export(state, SMALL, tmp_path / "a")
    state = dict(model.state_dict())
    state["backbone.embedding.weight"] = torch.zeros(16, 8)
    with pytest.raises(ExportError, match="shapes differ.*embedding"):
        write_export(state, SMALL, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_refuses_an_expert_parallel_shard(tmp_path):
    model = small_model()
    moe = model.moe_layers()[0]
    moe.num_local = moe.num_experts // 2  # what a rank of an ep_size 2 run holds
    with pytest.raises(ExportError, match="expert-parallel shard"):
        save_pretrained(model, tmp_path / "x")


def test_load_rejects_other_tokenizer_and_missing_files(tmp_path):
    _, export = small_export(tmp_path)
    config = json.loads((export / "config.json").read_text())
    config["tokenizer_version"] = "some-other-tokenizer"
    (export / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="tokenizer_version"):
        load_pretrained(export)
    with pytest.raises(ExportError, match="config.json missing"):
        load_pretrained(tmp_path / "nowhere")


def test_loads_and_runs_without_deepspeed(tmp_path):
    """The export path must not need DeepSpeed: run it in a fresh interpreter where importing
    deepspeed fails."""
    model, export = small_export(tmp_path)
    ids = encode("ACGTACGGATTACANNACGT").unsqueeze(0)
    with torch.no_grad():
        expected = model(ids).logits
    torch.save(expected, tmp_path / "expected.pt")
    code = f"""
import sys
sys.modules['deepspeed'] = None  # any 'import deepspeed' now raises ImportError
import torch
from janus_pretrain.export import load_pretrained, load_backbone
from janus_pretrain.tokenizer import encode
model = load_pretrained({str(export)!r})
with torch.no_grad():
    logits = model(encode('ACGTACGGATTACANNACGT').unsqueeze(0)).logits
torch.testing.assert_close(logits, torch.load({str(tmp_path / 'expected.pt')!r}), rtol=0, atol=0)
assert load_backbone({str(export)!r}).config.d_model == {SMALL.d_model}
print('ok')
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_damaged_or_replaced_weights_are_refused_by_their_digest(tmp_path):
    _, export = small_export(tmp_path)
    weights = export / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # flipped bytes inside a tensor: still a valid file
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="sha256 differs from the one in config.json"):
        load_pretrained(export)
    load_pretrained(export, verify=False)  # the switch: the file itself still parses
    weights.write_bytes(b"not safetensors")
    with pytest.raises(ExportError, match="cannot be read"):
        load_pretrained(export, verify=False)


def test_an_export_whose_config_was_edited_is_one_line_not_a_size_mismatch(tmp_path):
    """Issue 27, tracebacks: config.json's d_model edited (the weights' digest still holds)."""
    _, export = small_export(tmp_path)
    config = json.loads((export / "config.json").read_text())
    config["model"]["d_model"] *= 2
    (export / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"model.safetensors does not match .*config.json \(edited\?\): .*shapes "
                                          r"differ"):
        load_pretrained(export)
