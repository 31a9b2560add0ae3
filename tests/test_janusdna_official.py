"""The real JanusDNA: official checkpoints imported exactly, written back bitwise, read safely.

Golden values come from running the official code (tests/fixtures/janusdna_official/README.md):
two Lightning checkpoints (code of 2025-06-28 with mid attention; code of 2025-08-01 with the
final MLP, no mid attention), inputs with N, lower case and IUPAC codes, and the official
logits and losses. Properties: same logits (fp32, 1e-5), same CE / aux / total loss under the
official recipe options, same ids from the official tokenizer path, official -> export ->
official bitwise, no code of a checkpoint ever runs, every refusal is one line naming the key.
"""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from janus_pretrain.export import load_pretrained
from janus_pretrain.official.convert import OfficialFormatError, export_official, import_official
from janus_pretrain.official.lightning_file import read_official_checkpoint, write_official_checkpoint
from janus_pretrain.tokenizer import encode

FIXTURES = Path(__file__).parent / "fixtures" / "janusdna_official"
NAMES = ("w_midattn_tiny", "wo_midattn_mlp_tiny")
EXPECTED = load_file(str(FIXTURES / "expected.safetensors"))
INPUTS = list(csv.DictReader(open(FIXTURES / "inputs.tsv"), delimiter="\t"))
TOL = 1e-5


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("imported")
    return {name: import_official(FIXTURES / f"{name}.ckpt", root / name).export_dir for name in NAMES}


def _rows(name: str):
    for i, row in enumerate(INPUTS):
        if f"{name}.{i}.logits" in EXPECTED:
            yield i, row


def test_tokenizer_gives_the_official_pretraining_ids():
    for i, row in enumerate(INPUTS):
        assert encode(row["sequence"], "janusdna").tolist() == [int(x) for x in row["input_ids"].split(",")], row["name"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kernels", ["auto", "reference"])
def test_imported_logits_and_losses_equal_the_official(imported, name, kernels):
    model = load_pretrained(imported[name], kernels=kernels)
    assert model.config.loss_targets == "non_pad" and model.config.aux_loss_pooling == "stream_pooled"
    checked = 0
    for i, row in _rows(name):
        ids = EXPECTED[f"{name}.{i}.input_ids"]
        assert torch.equal(encode(row["sequence"], model.config.tokenizer), ids)
        with torch.no_grad():
            logits = model(ids[None]).logits[0]
            assert (logits - EXPECTED[f"{name}.{i}.logits"]).abs().max() < TOL, row["name"]
            out = model(ids[None], labels=EXPECTED[f"{name}.{i}.target"][None])
        coef = model.config.router_aux_loss_coef
        assert abs(out.ce_loss.item() - EXPECTED[f"{name}.{i}.main_loss"].item()) < TOL, row["name"]
        assert abs(coef * out.aux_loss.item() - EXPECTED[f"{name}.{i}.aux_loss"].item()) < TOL, row["name"]
        assert abs(out.loss.item() - EXPECTED[f"{name}.{i}.loss"].item()) < TOL, row["name"]
        checked += 1
    assert checked == 4  # L = 3, 37, 128, 300 (L < 3: the official model refuses)


def test_the_default_options_would_not_match(imported):
    """The official options are what make the match: per-layer aux, bases-only CE and the unpadded
    fusion scale each move the result (so the golden test cannot pass by accident)."""
    from dataclasses import replace

    from janus_pretrain.model import JanusForPretraining

    name = "w_midattn_tiny"
    official = load_pretrained(imported[name])
    i, row = next(iter(_rows(name)))
    i, row = list(_rows(name))[1]  # the 37 bp mixed input: N, IUPAC and lower case
    ids, target = EXPECTED[f"{name}.{i}.input_ids"][None], EXPECTED[f"{name}.{i}.target"][None]
    for change in ({"fusion_scale_dim": 0}, {"aux_loss_pooling": "layer_mean"}, {"loss_targets": "bases"}):
        model = JanusForPretraining(replace(official.config, **change)).eval()
        model.load_state_dict(official.state_dict())
        with torch.no_grad():
            got = model(ids, labels=target).loss.item()
        assert abs(got - EXPECTED[f"{name}.{i}.loss"].item()) > 1e-4, change


@pytest.mark.parametrize("name", NAMES)
def test_official_export_official_round_trip_is_bitwise(imported, tmp_path, name):
    source = read_official_checkpoint(FIXTURES / f"{name}.ckpt")
    written = export_official(imported[name], tmp_path / "official")
    again = read_official_checkpoint(written)
    weights = {k: v for k, v in source.state_dict.items() if not k.endswith("num_tokens.count")}
    assert set(again.state_dict) == set(weights)
    for key, tensor in weights.items():
        assert again.state_dict[key].dtype == tensor.dtype and torch.equal(again.state_dict[key], tensor), key
    assert again.hyper_parameters["model"]["config"] == source.hyper_parameters["model"]["config"]
    assert again.global_step == source.global_step
    assert (tmp_path / "official" / "model_config.json").is_file()
    # and what was written imports to the same export weights
    twice = import_official(written, tmp_path / "twice").export_dir
    a, b = load_pretrained(imported[name]).state_dict(), load_pretrained(twice).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_pickle_payload_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Payload()}, bad)
    with pytest.raises(OfficialFormatError, match=r"refusing to unpickle: it references (posix|os)\.system"):
        import_official(bad, tmp_path / "out")
    assert not marker.exists()


def _variant(tmp_path: Path, edit_state=None, edit_hparams=None, name: str = "w_midattn_tiny") -> Path:
    source = read_official_checkpoint(FIXTURES / f"{name}.ckpt")
    state, hparams = dict(source.state_dict), source.hyper_parameters
    if edit_state:
        edit_state(state)
    if edit_hparams:
        edit_hparams(hparams)
    return write_official_checkpoint(tmp_path / "variant.ckpt", state, hparams, global_step=4)


def test_refusals_are_one_line_naming_the_key(tmp_path):
    cases = [
        (dict(edit_hparams=lambda h: h["model"].update(_name_="caduceus_lm")), r"Caduceus checkpoint"),
        (dict(edit_hparams=lambda h: h["model"].update(_name_="hyena_lm")), r"HyenaDNA checkpoint"),
        (dict(edit_hparams=lambda h: h["model"]["config"].update(hidden_size=48)), r"model\.config\.hidden_size=48"),
        (dict(edit_hparams=lambda h: h["model"]["config"].update(attn_layer_offset=1)), r"attn_layer_period/offset"),
        (dict(edit_hparams=lambda h: h["model"]["config"].update(layer_fusion=True)), r"model\.config\.layer_fusion"),
        (dict(edit_state=lambda s: s.update({"model.model.extra.weight": torch.zeros(2)})),
         r"cannot map tensor 'model\.model\.extra\.weight'"),
        (dict(edit_state=lambda s: s.pop("model.model.final_attention.self_attn.k_proj.weight")),
         r"no tensor 'model\.model\.final_attention\.self_attn\.k_proj\.weight'"),
    ]
    for i, (edit, message) in enumerate(cases):
        path = _variant(tmp_path, **edit)
        with pytest.raises(OfficialFormatError, match=message) as info:
            import_official(path, tmp_path / f"out{i}")
        assert "\n" not in str(info.value)


def test_a_fine_tuned_checkpoint_imports_its_backbone(tmp_path, imported):
    """Fine-tuned official checkpoints keep the backbone names, drop lm_head and add decoder.*."""
    def finetuned(state):
        state.pop("model.lm_head.weight")
        state["decoder.0.output_transform.weight"] = torch.zeros(2, 32)
    result = import_official(_variant(tmp_path, edit_state=finetuned), tmp_path / "ft")
    assert result.fine_tuned
    a, b = load_pretrained(imported["w_midattn_tiny"]).backbone, load_pretrained(result.export_dir).backbone
    ids = EXPECTED["w_midattn_tiny.4.input_ids"][None]
    with torch.no_grad():
        assert torch.equal(a(ids).hidden_states, b(ids).hidden_states)
    with pytest.raises(OfficialFormatError, match="LM head is not trained"):
        export_official(result.export_dir, tmp_path / "back")


def test_the_stored_schedule_is_the_timm_curve():
    """The fixture ends at global_step 4 of 4 with lr = lr_min (1e-4) from warm-up init 1e-6."""
    from janus_pretrain.lr_schedule import timm_warmup_cosine

    assert timm_warmup_cosine(0, 4, 0.4, 8e-3, 1e-6, 1e-4) == pytest.approx(1e-6)
    assert timm_warmup_cosine(4, 4, 0.4, 8e-3, 1e-6, 1e-4) == pytest.approx(1e-4)
    mid = timm_warmup_cosine(2, 4, 0.4, 8e-3, 1e-6, 1e-4)
    import math
    assert mid == pytest.approx(1e-4 + 0.5 * (8e-3 - 1e-4) * (1 + math.cos(math.pi * 1.6 / 3.6)))


def test_official_weight_decay_groups_hold_the_official_elements(imported):
    """optimizer.no_decay janusdna exempts what the official optimizer's group 1 holds (biases and
    the embedding: 13 tensors in the fixture), counted in elements since our q/k/v are one tensor."""
    from janus_pretrain.engine.optim import parameter_groups

    state = read_official_checkpoint(FIXTURES / "w_midattn_tiny.ckpt").optimizer_states[0]
    groups = state["param_groups"]
    numel = [sum(state["state"][pid]["exp_avg"].numel() for pid in g["params"]) for g in groups]
    model = load_pretrained(imported["w_midattn_tiny"])
    ours = {"decay": 0, "no_decay": 0}
    for group in parameter_groups(model, 0.1, "janusdna"):  # expert groups split off by DeepSpeed keep decay_kind
        ours[group["decay_kind"]] += sum(p.numel() for p in group["params"])
    assert groups[1]["weight_decay"] == 0.0
    assert ours["no_decay"] == numel[1] and ours["decay"] == numel[0]


def test_official_init_is_deterministic_and_official_in_shape():
    from janus_pretrain.model import JanusForPretraining
    from janus_pretrain.model_config import ModelConfig

    config = ModelConfig(d_model=32, n_layers=4, attn_layer_period=4, attn_layer_offset=2, num_experts=4,
                         intermediate_size=64, init="janusdna")
    torch.manual_seed(3)
    a = JanusForPretraining(config).state_dict()
    torch.manual_seed(3)
    b = JanusForPretraining(config).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.count_nonzero(a["backbone.layers.0.fwd.mixer.dt_proj.bias"]) == 0
    qkv = a["backbone.layers.2.fwd.mixer.qkv_proj.weight"]
    assert qkv.abs().max() <= (6 / 64) ** 0.5 and qkv.std() > 0.1  # Xavier uniform, not N(0, 0.02)
    assert 0.015 < a["backbone.layers.0.fwd.mixer.conv1d.weight"].std() < 0.025


def test_convert_command_both_ways(tmp_path):
    def janus(*args):
        return subprocess.run([sys.executable, "-m", "janus_pretrain", "convert", *args], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    done = janus("--from", "janusdna", "--checkpoint", str(FIXTURES / "wo_midattn_mlp_tiny.ckpt"),
                 "--out", str(tmp_path / "export"))
    assert done.returncode == 0, done.stderr
    assert "no mid attention, final MLP, fusion scale 1/sqrt(16)" in done.stdout
    back = janus("--to", "janusdna", "--model", str(tmp_path / "export"), "--out", str(tmp_path / "official"))
    assert back.returncode == 0, back.stderr
    assert (tmp_path / "official" / "checkpoints" / "last.ckpt").is_file()
    bad = janus("--from", "janusdna", "--checkpoint", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such file" in bad.stderr
    junk = tmp_path / "junk.ckpt"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("junk/data.pkl", b"\x80\x02garbage")
    bad = janus("--from", "janusdna", "--checkpoint", str(junk), "--out", str(tmp_path / "y"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_transformers_loads_an_imported_model_with_the_official_tokenizer(imported, tmp_path):
    pytest.importorskip("transformers")
    from hf_helpers import transformers_forward

    name = "w_midattn_tiny"
    i = 3  # the 37 bp mixed input
    ids = EXPECTED[f"{name}.{i}.input_ids"][None]
    out = transformers_forward(imported[name], ids, tmp_path / "hf", texts=(INPUTS[i]["sequence"],))
    assert (out["logits"][0] - EXPECTED[f"{name}.{i}.logits"]).abs().max() < TOL
    assert out["token_ids"][0] == ids[0].tolist()


def test_continued_pretraining_starts_from_the_official_loss(imported, tmp_path):
    """checkpoint.init_from an imported model, 2 ranks, ZeRO-2, expert parallelism 2: the first
    step's loss on a golden input is the loss the official code computed for it."""
    from dataclasses import asdict

    from engine_launch import logs, metrics, run, small_config

    name, i = "w_midattn_tiny", 4  # the 128 bp input
    model = asdict(load_pretrained(imported[name]).config)
    model.update(kernels="reference")
    ids = EXPECTED[f"{name}.{i}.input_ids"].tolist()
    config = small_config(tmp_path / "run", model=model, data={"seq_len": len(ids)},
                          train={"micro_batch": 1, "steps": 1, "precision": "fp32"},
                          parallel={"zero_stage": 2, "ep_size": 2},
                          checkpoint={"init_from": str(imported[name])})
    codes = run(2, {"config": config, "data": "fixed", "fixed_ids": ids}, tmp_path / "out")
    assert codes == [0, 0], logs(tmp_path / "out")
    first = metrics(tmp_path / "run")[0]
    assert abs(first["loss"] - EXPECTED[f"{name}.{i}.loss"].item()) < TOL
    assert abs(first["ce_loss"] - EXPECTED[f"{name}.{i}.main_loss"].item()) < TOL


def made_here_model():
    """The model behind made_here.expected.safetensors (README there): built here, not imported."""
    from janus_pretrain.model import JanusForPretraining
    from janus_pretrain.model_config import ModelConfig

    torch.manual_seed(5)
    config = ModelConfig(d_model=32, n_layers=4, attn_layer_period=4, attn_layer_offset=2, num_experts=4,
                         intermediate_size=64, final_mlp=True, final_mlp_kind="janusdna", fusion_scale_dim=16,
                         tokenizer="janusdna", norm_eps=1e-6, init="janusdna", aux_loss_pooling="stream_pooled",
                         loss_targets="non_pad")
    model = JanusForPretraining(config)
    with torch.no_grad():  # norms and biases away from 1 and 0, so that a mis-mapped name cannot hide
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm_f.weight") or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model


def test_a_model_made_here_is_what_the_official_code_computes(tmp_path):
    """Written with export_official, the official code loaded it strictly and computed these
    outputs (fixture README); the same file read back here gives them too."""
    from janus_pretrain.export import save_pretrained

    golden = load_file(str(FIXTURES / "made_here.expected.safetensors"))
    save_pretrained(made_here_model(), tmp_path / "export")
    written = export_official(tmp_path / "export", tmp_path / "official")
    model = load_pretrained(import_official(written, tmp_path / "again").export_dir)
    for i in range(2, 6):
        ids = golden[f"last.{i}.input_ids"][None]
        with torch.no_grad():
            assert (model(ids).logits[0] - golden[f"last.{i}.logits"]).abs().max() < TOL
            out = model(ids, labels=golden[f"last.{i}.target"][None])
        assert abs(out.loss.item() - golden[f"last.{i}.loss"].item()) < TOL


def test_embed_reads_a_fasta_with_the_imported_models_tokenizer(imported, tmp_path):
    """janus embed on an imported export feeds the official ids (N -> [PAD], IUPAC -> [UNK])."""
    from janus_pretrain.downstream.embedding import embed_fasta
    from janus_pretrain.export import load_backbone

    name, i = "w_midattn_tiny", 3  # the 37 bp input with N, lower case and IUPAC codes
    fasta = tmp_path / "x.fa"
    fasta.write_text(f">mixed\n{INPUTS[i]['sequence']}\n")
    backbone = load_backbone(imported[name])
    result = embed_fasta(backbone, fasta, window=64)
    with torch.no_grad():
        want = backbone(EXPECTED[f"{name}.{i}.input_ids"][None]).hidden_states[0].double().mean(0).float()
    assert torch.allclose(torch.from_numpy(result.mean[0]), want, atol=1e-6)
