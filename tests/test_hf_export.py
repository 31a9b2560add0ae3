"""Exports load with Hugging Face transformers (trust_remote_code), without janus_pretrain, and
compute what our loader computes; the code they carry is the package's own."""
from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from downstream_helpers import SMALL, random_dna, small_export
from hf_helpers import transformers_forward
from janus_pretrain.digests import file_digest
from janus_pretrain.export import add_remote_code, load_pretrained
from janus_pretrain.export_layout import AUTO_MAP, TOKENIZER_CONFIG_NAME
from janus_pretrain.hf.remote_code import ENTRY_MODULES, RemoteCodeError, package_imports, package_source
from janus_pretrain.tokenizer import NUCLEOTIDE_CODES, TokenizerError, encode

pytest.importorskip("transformers")
from janus_pretrain.hf.modeling_janus_dna import JanusDNAForMaskedLM, JanusDNAModel  # noqa: E402
from janus_pretrain.hf.tokenization_janus_dna import JanusDNATokenizer  # noqa: E402

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
TEXTS = ("ACGTTGCAAGCTNACGGATCCA", "acgtRYSWKMbdhvun", "AC[MASK]GT[PAD]")


def _ids() -> torch.Tensor:
    return torch.stack([encode("ACGTTGCAAGCTNACGGATCCA" * 3), encode(random_dna(66, seed=5))])


def test_export_carries_the_package_code(tmp_path):
    """Every .py file in an export is a package module with only its package imports made relative,
    and together they are everything the entry modules import from the package."""
    _, export = small_export(tmp_path)
    remote_code = json.loads((export / "config.json").read_text())["remote_code"]
    assert set(remote_code) == {p.name for p in export.glob("*.py")}
    assert set(ENTRY_MODULES) <= set(remote_code.values()) and "janus_pretrain.model.janus" in remote_code.values()
    for flat, dotted in remote_code.items():
        text = (export / flat).read_text()
        source = PACKAGE_ROOT.joinpath(*dotted.split(".")).with_suffix(".py").read_text()
        assert package_source(text, remote_code) == source, flat
        for node in ast.walk(ast.parse(text)):  # nothing left that needs janus_pretrain installed
            assert not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("janus_pretrain")), flat
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert f"{node.module}.py" in remote_code, (flat, node.module)
    config = json.loads((export / "config.json").read_text())
    assert config["auto_map"] == json.loads(json.dumps(AUTO_MAP)) and config["model_type"] == "janus_dna"
    assert json.loads((export / TOKENIZER_CONFIG_NAME).read_text())["auto_map"]["AutoTokenizer"][0].startswith(
        "tokenization_janus_dna.")


def test_package_imports_that_cannot_be_made_relative_are_refused(tmp_path):
    """The build step copies modules, not packages: `from janus_pretrain.model import X` (the
    package's __init__) or `import janus_pretrain.x` would leave the copy needing janus_pretrain."""
    module = tmp_path / "m.py"
    for line, match in (("from janus_pretrain.model import JanusModel", "names a package"),
                        ("import janus_pretrain.model.janus", "cannot be made relative")):
        module.write_text(f"def f():\n    {line}\n")
        with pytest.raises(RemoteCodeError, match=match):
            package_imports(module)
    module.write_text("from janus_pretrain.model.janus import JanusModel\n")
    assert [node.module for node in package_imports(module)] == ["janus_pretrain.model.janus"]


def test_transformers_without_janus_pretrain_matches_our_loader(tmp_path):
    """MoE model: logits and backbone states through transformers equal our loader's, the tokenizer
    gives our ids, and save_pretrained writes a directory both loaders read back exactly."""
    model, export = small_export(tmp_path)
    ids = _ids()
    out = transformers_forward(export, ids, tmp_path / "hf", TEXTS, save_to=tmp_path / "saved")
    assert (out["head_class"], out["backbone_class"]) == ("JanusDNAForMaskedLM", "JanusDNAModel")
    ours = load_pretrained(export)
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], ours(ids).logits)  # fp32 rounding tolerances
        torch.testing.assert_close(out["hidden"], ours.backbone(ids).hidden_states)
        assert out["logits"].std(dim=1).min() > 0  # not a constant model
    assert out["token_ids"][:2] == [encode(t).tolist() for t in TEXTS[:2]]
    assert out["token_ids"][2] == [7, 8, 3, 9, 10, 4]  # special tokens written in the text
    torch.testing.assert_close(out["saved_logits"], out["logits"], rtol=0, atol=0)
    assert out["saved_token_ids"] == out["token_ids"]
    saved_config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved_config["weights_sha256"] == file_digest(tmp_path / "saved" / "model.safetensors")
    reloaded = load_pretrained(tmp_path / "saved")  # verifies that digest
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_head_and_backbone_follow_the_objective(tmp_path, objective):
    """The transformers classes run the package's own forward: other objectives, the final MLP
    (mlp.* weights) and the training loss with labels agree with JanusForPretraining."""
    config = replace(SMALL, objective=objective, final_mlp=True)
    model, export = small_export(tmp_path, config=config)
    head, backbone, ids = JanusDNAForMaskedLM.from_pretrained(export), JanusDNAModel.from_pretrained(export), _ids()
    assert any(k.startswith("mlp.") for k in head.state_dict())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(ids).logits, model(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(backbone(ids).last_hidden_state, model.backbone(ids).hidden_states, rtol=0, atol=0)
        torch.testing.assert_close(head(ids, labels=ids).loss, model(ids, labels=ids).loss, rtol=0, atol=0)
    assert not head._core.training  # from_pretrained's eval() reaches the package model too, and train()
    assert head.train().backbone.training and head._core.training


def test_tokenizer_gives_the_package_ids():
    tokenizer = JanusDNATokenizer()
    gen = torch.Generator().manual_seed(0)
    letters = NUCLEOTIDE_CODES + NUCLEOTIDE_CODES.lower()
    for length in (1, 7, 300):
        text = "".join(letters[i] for i in torch.randint(0, len(letters), (length,), generator=gen).tolist())
        assert tokenizer(text)["input_ids"] == encode(text).tolist(), text
    assert tokenizer.decode(encode("ACGTN").tolist()) == "ACGTN"
    assert (tokenizer.pad_token_id, tokenizer.mask_token_id, tokenizer.unk_token_id) == (4, 3, 6)
    with pytest.raises(TokenizerError, match="invalid DNA character 'X' at position 2"):
        tokenizer("ACXGT")


def test_padded_batches_are_refused(tmp_path):
    """The model has no padding mask: a padded batch is an error, not states that read the padding."""
    _, export = small_export(tmp_path)
    batch = JanusDNATokenizer()(["ACGTAC", "ACG"], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="no padding mask"):
        JanusDNAModel.from_pretrained(export)(**batch)
    same_length = JanusDNATokenizer()(["ACGTAC", "ACGTTT"], return_tensors="pt")
    assert JanusDNAModel.from_pretrained(export)(**same_length).last_hidden_state.shape == (2, 6, SMALL.d_model)


def test_old_export_still_loads_and_gains_transformers_support(tmp_path):
    """An export written before the transformers files existed loads with our loader as before;
    add_remote_code makes it transformers-loadable without touching the weights."""
    model, export = small_export(tmp_path)
    config = json.loads((export / "config.json").read_text())
    hf_keys = {k: config.pop(k) for k in ("model_type", "architectures", "auto_map", "remote_code")}
    (export / "config.json").write_text(json.dumps(config))
    for path in [*export.glob("*.py"), export / TOKENIZER_CONFIG_NAME]:
        path.unlink()
    assert torch.equal(load_pretrained(export).lm_head.weight, model.lm_head.weight)
    weights = (export / "model.safetensors").read_bytes()
    add_remote_code(export)
    config = json.loads((export / "config.json").read_text())
    assert {k: config[k] for k in hf_keys} == hf_keys and (export / "model.safetensors").read_bytes() == weights
    assert torch.equal(JanusDNAForMaskedLM.from_pretrained(export).lm_head.weight, model.lm_head.weight)
    load_pretrained(export)  # digest still verifies



@pytest.mark.parametrize("tokenizer_first", [True, False])
def test_package_classes_save_what_an_export_carries(tmp_path, tokenizer_first):
    """save_pretrained of the package's own classes (transformers copies no code for them) writes
    the export's code files, config.json keys and AutoTokenizer entry, in either order."""
    model, export = small_export(tmp_path)
    head, tokenizer, saved = JanusDNAForMaskedLM.from_pretrained(export), JanusDNATokenizer(), tmp_path / "saved"
    for save in ((tokenizer, head) if tokenizer_first else (head, tokenizer)):
        save.save_pretrained(saved)
    assert {p.name: p.read_text() for p in saved.glob("*.py")} == {p.name: p.read_text() for p in export.glob("*.py")}
    config, exported = (json.loads((d / "config.json").read_text()) for d in (saved, export))
    assert {k: config[k] for k in ("auto_map", "model_type", "remote_code", "model")} == \
        {k: exported[k] for k in ("auto_map", "model_type", "remote_code", "model")}
    tokenizer_config = json.loads((saved / TOKENIZER_CONFIG_NAME).read_text())
    assert tokenizer_config["auto_map"] == {"AutoTokenizer": list(AUTO_MAP["AutoTokenizer"])}
    assert tokenizer_config["mask_token"] == "[MASK]"  # transformers' own settings kept
    assert torch.equal(load_pretrained(saved).lm_head.weight, model.lm_head.weight)


def test_from_pretrained_refuses_replaced_or_non_finite_weights(tmp_path):
    """Issue 27, silent 7: transformers' load checks what janus embed checks: the digest config.json
    records, and (digest fixed up too) that every weight is finite."""
    from safetensors.torch import load_file, save_file


    _, export = small_export(tmp_path)
    weights = export / "model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(str(weights)).items()}, str(weights))
    for cls in (JanusDNAForMaskedLM, JanusDNAModel):
        with pytest.raises(ValueError, match="sha256 differs from the one in config.json"):
            cls.from_pretrained(export)
    config = json.loads((export / "config.json").read_text())
    config["weights_sha256"] = file_digest(weights)
    (export / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"weights hold NaN/inf .*export again"):
        JanusDNAForMaskedLM.from_pretrained(export)
