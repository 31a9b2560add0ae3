"""Sequence classification: metrics against brute force, strand symmetry of RC conjoining,
length grouping, table errors naming file/line/column, the shipped splice split, and a short
finetune on the real splice set that must beat the majority class clearly."""
from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from downstream_helpers import random_dna, small_export, small_model
from janus_pretrain.config import ModelConfig
from janus_pretrain.downstream.classification import SequenceClassifier, encode_all, predict_logits
from janus_pretrain.downstream.finetune import FinetuneOptions, load_classifier, save_classifier
from janus_pretrain.downstream.task_metrics import auroc, matthews_corrcoef
from janus_pretrain.downstream.tsv import TableError, encode_labels, read_labelled_tsv, stratified_split
from janus_pretrain.export import read_export_config, save_pretrained
from janus_pretrain.model import JanusForPretraining
from janus_pretrain.tokenizer import encode, reverse_complement

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "data" / "labels"


def test_auroc_equals_pairwise_count_with_ties():
    gen = torch.Generator().manual_seed(0)
    score = torch.randint(0, 6, (40,), generator=gen).float()  # many ties
    target = torch.randint(0, 2, (40,), generator=gen)
    pos, neg = score[target == 1], score[target == 0]
    wins = sum(float(p > n) + 0.5 * float(p == n) for p, n in itertools.product(pos, neg))
    assert auroc(score, target) == pytest.approx(wins / (len(pos) * len(neg)))


def test_mcc_two_class_formula_and_multiclass_extremes():
    predicted, target = torch.tensor([1, 1, 1, 0, 0, 1, 0, 1]), torch.tensor([1, 0, 1, 0, 0, 1, 1, 1])
    tp, tn, fp, fn = 4, 2, 1, 1
    expected = (tp * tn - fp * fn) / ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    assert matthews_corrcoef(predicted, target, 2) == pytest.approx(expected)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    assert matthews_corrcoef(labels, labels, 3) == pytest.approx(1.0)
    assert matthews_corrcoef(torch.zeros(6, dtype=torch.long), labels, 3) == 0.0  # constant prediction


def test_rc_conjoined_classifier_is_strand_symmetric():
    torch.manual_seed(0)
    model = SequenceClassifier(small_model().backbone, 3, rc_conjoin=True).eval()
    ids = torch.stack([encode(random_dna(30, seed=s)) for s in range(3)])
    with torch.no_grad():
        forward, _ = model(ids)
        backward, _ = model(reverse_complement(ids))
        plain = SequenceClassifier(model.backbone, 3, rc_conjoin=False).eval()
        plain.head.load_state_dict(model.head.state_dict())
        one_strand, _ = plain(ids)
    torch.testing.assert_close(forward, backward, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(one_strand, plain(reverse_complement(ids))[0], atol=1e-5)  # the model alone is not


def test_mixed_lengths_are_batched_by_length_without_padding():
    torch.manual_seed(0)
    model = SequenceClassifier(small_model().backbone, 2).eval()
    seqs = [random_dna(n, seed=n) for n in (20, 33, 20, 41, 33, 20)]
    batched = predict_logits(model, encode_all(seqs), batch_size=4)
    with torch.no_grad():
        alone = torch.cat([model(encode(s)[None])[0] for s in seqs])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)


def test_table_errors_name_file_line_and_column(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("seq\tclass\nACGT\ta\n")
    with pytest.raises(TableError, match=r"t.tsv line 1: no column 'sequence' in header \['seq', 'class'\]"):
        read_labelled_tsv(path)
    assert read_labelled_tsv(path, "seq", "class").labels == ["a"]
    path.write_text("sequence\tlabel\nAC-GT\ta\n")
    with pytest.raises(TableError, match="line 2, column 'sequence': invalid DNA character '-' at position 3"):
        read_labelled_tsv(path)
    path.write_text("sequence\tlabel\nACGT\ta\nACGT\n")
    with pytest.raises(TableError, match="line 3: 1 fields, header has 2"):
        read_labelled_tsv(path)
    path.write_text("sequence\tlabel\nACGT\tz\n")
    with pytest.raises(TableError, match="line 2: label 'z' does not occur in the training set"):
        encode_labels(read_labelled_tsv(path), ["a", "b"])


def _rows(path: Path) -> list[tuple[str, str]]:
    with path.open() as handle:
        return [tuple(r) for r in list(csv.reader(handle, delimiter="\t"))[1:]]


def test_shipped_splice_split_is_a_seeded_stratified_partition(tmp_path):
    whole = _rows(LABELS / "splice_junctions.tsv")
    parts = {name: _rows(LABELS / f"splice_{name}.tsv") for name in ("train", "valid", "test")}
    assert Counter(whole) == Counter(parts["train"]) + Counter(parts["valid"]) + Counter(parts["test"])
    seqs = {name: {s for s, _ in rows} for name, rows in parts.items()}
    assert not (seqs["train"] & seqs["valid"]) and not (seqs["train"] & seqs["test"]) and not (seqs["valid"] & seqs["test"])
    overall = Counter(label for _, label in whole)
    for name, frac in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        counts = Counter(label for _, label in parts[name])
        for label, n in overall.items():
            assert abs(counts[label] - frac * n) <= 0.02 * n + 2, (name, label)
    stratified_split(LABELS / "splice_junctions.tsv", tmp_path / "splice", seed=0)  # reproducible
    for name in parts:
        assert (tmp_path / f"splice_{name}.tsv").read_bytes() == (LABELS / f"splice_{name}.tsv").read_bytes()


def test_finetune_cli_beats_majority_on_splice(tmp_path):
    """Random-init tiny Janus backbone (Mamba only, MoE at layer 1 skipped) finetuned end to end
    on the real splice training set for a short run; the held-out validation accuracy must be
    clearly above the majority class."""
    torch.manual_seed(0)
    config = ModelConfig(d_model=16, n_layers=1, attn_layer_period=0, expert_layer_period=0, n_heads=2, d_state=4,
                         expand=1, intermediate_size=32, kernels="reference", scan_chunk=16)
    export = save_pretrained(JanusForPretraining(config), tmp_path / "export")
    out = tmp_path / "ft"
    cmd = [sys.executable, str(REPO / "launch" / "finetune.py"), "--model", str(export),
           "--train", str(LABELS / "splice_train.tsv"), "--valid", str(LABELS / "splice_valid.tsv"),
           "--test", str(LABELS / "splice_test.tsv"), "--out", str(out), "--max-steps", "150", "--lr", "1e-2",
           "--eval-every", "50", "--patience", "10", "--threads", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    majority = max(Counter(label for _, label in _rows(LABELS / "splice_valid.tsv")).values()) / 322
    assert metrics["valid"]["accuracy"] > majority + 0.08, metrics["valid"]
    assert metrics["test"]["mcc"] > 0.2, metrics["test"]
    model, classes = load_classifier(out)
    assert classes == ["ei", "ie", "n"]
    valid = read_labelled_tsv(LABELS / "splice_valid.tsv")
    logits = predict_logits(model, encode_all(valid.sequences))
    accuracy = float((logits.argmax(1) == torch.tensor(encode_labels(valid, classes))).float().mean())
    assert accuracy == pytest.approx(metrics["valid"]["accuracy"])  # the saved model is the best one


def test_finetune_cli_reports_bad_label_column(tmp_path):
    config = ModelConfig(d_model=16, n_layers=1, attn_layer_period=0, expert_layer_period=0, n_heads=2, d_state=4,
                         expand=1, kernels="reference")
    export = save_pretrained(JanusForPretraining(config), tmp_path / "export")
    cmd = [sys.executable, str(REPO / "launch" / "finetune.py"), "--model", str(export),
           "--train", str(LABELS / "splice_train.tsv"), "--valid", str(LABELS / "splice_valid.tsv"),
           "--out", str(tmp_path / "ft"), "--label-column", "class"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "splice_train.tsv line 1: no column 'class'" in result.stderr


def test_flatten_pooling_saves_loads_and_checks_length(tmp_path):
    model_, export = small_export(tmp_path)
    torch.manual_seed(0)
    model = SequenceClassifier(model_.backbone, 3, pooling="flatten", seq_len=24).eval()
    with torch.no_grad():
        model.head.weight.normal_()
    ids = torch.stack([encode(random_dna(24, seed=s)) for s in range(2)])
    save_classifier(model, tmp_path / "clf", ["a", "b", "c"], read_export_config(export), FinetuneOptions(pooling="flatten"))
    loaded, classes = load_classifier(tmp_path / "clf")
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], model(ids)[0], rtol=0, atol=0)
        with pytest.raises(ValueError, match="set up for length 24, got 25"):
            loaded(torch.stack([encode(random_dna(25, seed=1))]))
    assert loaded.pooling == "flatten" and classes == ["a", "b", "c"]


def test_frozen_backbone_cache_gives_the_models_own_logits_and_losses_are_reported_apart(tmp_path):
    """The cached head (frozen backbone) must score exactly what the full classifier scores, and
    without --valid the validation rows come from the training file, disjoint and seeded."""
    from eval_fixtures import motif_rows, write_table
    from janus_pretrain.downstream.finetune import _CachedHead, finetune

    torch.manual_seed(0)
    model = SequenceClassifier(small_model().backbone, 2, rc_conjoin=True).eval()
    seqs = [s for s, _ in motif_rows(10, 20, seed=1)]
    cached = _CachedHead(model, encode_all(seqs[:4]), encode_all(seqs), batch_size=3)
    torch.testing.assert_close(cached.predict_valid(), predict_logits(model, encode_all(seqs)), rtol=1e-5, atol=1e-6)
    _, export = small_export(tmp_path)
    train = write_table(tmp_path / "train.tsv", motif_rows(40, 20, seed=2))
    for frozen in (True, False):
        out = tmp_path / f"ft_{frozen}"
        result = finetune(export, train, None, out, None, FinetuneOptions(max_steps=4, eval_every=2, batch_size=8,
                                                                           freeze_backbone=frozen), log=lambda *_: None)
        history = json.loads((out / "metrics.json").read_text())["history"]
        assert all(r["train_task_loss"] > 0 for r in history)
        assert all((r["train_aux_loss"] is None) == frozen for r in history)  # no MoE in a cached-head step
        assert result["valid"]
    again = finetune(export, train, None, tmp_path / "again", None, FinetuneOptions(max_steps=4, eval_every=2, batch_size=8,
                                                                                    freeze_backbone=False), log=lambda *_: None)
    assert again["history"] == [{**r, "seconds": again["history"][i]["seconds"]} for i, r in enumerate(result["history"])]


def test_a_300_kbp_row_is_read(tmp_path):
    """Issue 27, tracebacks: csv's default field limit (131,072 characters) is no limit on a sequence."""
    long = random_dna(300_000, 5)
    table = tmp_path / "long.tsv"
    table.write_text(f"sequence\tlabel\n{random_dna(50, 1)}\ta\n{long}\tb\n")
    read = read_labelled_tsv(table)
    assert read.sequences[1] == long and read.lines == [2, 3]
