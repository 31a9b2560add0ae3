"""Evaluation suites: readers for every format (and their errors naming file, line and column),
metrics against brute force, task versions, a whole suite on a tiny export (pretrained, random
init, k-mer) and its reproducibility."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from downstream_helpers import small_export
from eval_fixtures import motif_rows, write_suite, write_table
from janus_pretrain.config import ConfigError
from janus_pretrain.downstream.task_metrics import compute_metrics
from janus_pretrain.downstream.tsv import LabelledTable, TableError, kfold
from janus_pretrain.downstream.variants import VariantError
from janus_pretrain.evaluation.probes import kmer_features
from janus_pretrain.evaluation.readers import read_snv_task, read_table
from janus_pretrain.evaluation.registry import load_suite
from janus_pretrain.evaluation.suite_job import evaluate_suite as evaluate
from janus_pretrain.rng import preserved as preserved_rng


# ---- readers ----

def test_tsv_csv_parquet_and_genomic_benchmarks_read_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = motif_rows(6, 12, seed=0)
    tsv = read_table(write_table(tmp_path / "t.tsv", rows))
    csv = read_table(write_table(tmp_path / "t.csv", rows, sep=","))
    pq.write_table(pa.table({"seq": [s for s, _ in rows], "y": [label for _, label in rows]}), tmp_path / "t.parquet")
    parquet = read_table(tmp_path / "t.parquet", sequence_column="seq", label_column="y")
    for i, (seq, label) in enumerate(rows):
        (tmp_path / "gb" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "gb" / label / f"{i}.txt").write_text(seq + "\n")
    gb = read_table(tmp_path / "gb")
    for table in (tsv, csv, parquet):
        assert list(zip(table.sequences, table.labels)) == rows
    assert sorted(zip(gb.sequences, gb.labels)) == sorted(rows)


def test_bad_files_name_file_line_and_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "bad.csv").write_text("sequence,label\nACGT,a\nAC#T,b\n")
    with pytest.raises(TableError, match=r"bad.csv line 3, column 'sequence': invalid DNA character '#' at position 3"):
        read_table(tmp_path / "bad.csv")
    pq.write_table(pa.table({"sequence": ["ACGT", "ACXT"], "label": ["a", "b"]}), tmp_path / "bad.parquet")
    with pytest.raises(TableError, match=r"bad.parquet row 2, column 'sequence': invalid DNA character 'X' at position 3"):
        read_table(tmp_path / "bad.parquet")
    with pytest.raises(TableError, match=r"bad.parquet: no column 'seq'"):
        read_table(tmp_path / "bad.parquet", sequence_column="seq")
    (tmp_path / "gb" / "a").mkdir(parents=True)
    (tmp_path / "gb" / "a" / "1.txt").write_text("\nAC GT\n")
    with pytest.raises(TableError, match=r"1.txt line 2, column 'sequence': invalid DNA character ' ' at position 3"):
        read_table(tmp_path / "gb")
    (tmp_path / "v.tsv").write_text("chrom\tpos\tref\talt\tlabel\nchrT\t3\tA\tC\t1\nchrT\t4\tA\tC\tmaybe\n")
    with pytest.raises(VariantError, match=r"v.tsv line 3, column 'label': label 'maybe' is not 0/1"):
        read_snv_task(tmp_path / "v.tsv")


def test_labelled_vcf_takes_the_label_from_info(tmp_path):
    (tmp_path / "v.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                                    "chrT\t5\t.\tA\tG\t.\t.\tDP=3;LABEL=1\nchrT\t9\t.\tC\tT\t.\t.\tLABEL=0\n")
    variants, labels = read_snv_task(tmp_path / "v.vcf", "LABEL")
    assert [(v.pos, v.ref, v.alt) for v in variants] == [(5, "A", "G"), (9, "C", "T")]
    assert labels.tolist() == [1, 0]


# ---- metrics against brute force ----

def test_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    scores, target = rng.normal(size=(60, 3)), rng.integers(0, 3, 60)
    predicted = scores.argmax(1)
    f1s = []
    for c in range(3):
        tp = np.sum((predicted == c) & (target == c))
        precision, recall = tp / max(np.sum(predicted == c), 1), tp / max(np.sum(target == c), 1)
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    probs = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    aurocs = []
    for c in range(3):
        pos, neg = probs[target == c, c], probs[target != c, c]
        aurocs.append(np.mean([float(p > n) + 0.5 * float(p == n) for p, n in itertools.product(pos, neg)]))
    got = compute_metrics(["accuracy", "f1_macro", "auroc"], scores, target)
    assert got["accuracy"] == pytest.approx(np.mean(predicted == target))
    assert got["f1_macro"] == pytest.approx(np.mean(f1s))
    assert got["auroc"] == pytest.approx(np.mean(aurocs))
    x, y = rng.normal(size=30), rng.normal(size=30)
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731  (no ties in continuous draws)
    pearson = lambda a, b: np.sum((a - a.mean()) * (b - b.mean())) / np.sqrt(np.sum((a - a.mean()) ** 2) * np.sum((b - b.mean()) ** 2))  # noqa: E731
    got = compute_metrics(["pearson", "spearman"], x, y)
    assert got["pearson"] == pytest.approx(pearson(x, y))
    assert got["spearman"] == pytest.approx(pearson(rank(x), rank(y)))


def test_kmer_features_count_overlapping_kmers_and_fold_strands():
    feats = kmer_features(["AACGTT", "NNAA"], 2)
    index = {"AA": 0, "AC": 1, "CG": 6, "GT": 11, "TT": 15}
    assert feats[0][[index[k] for k in ("AA", "AC", "CG", "GT", "TT")]].tolist() == pytest.approx([0.2] * 5)
    assert feats[1][index["AA"]] == 1.0  # k-mers with N are not counted
    folded = kmer_features(["AAC"], 2, rc_fold=True)[0]  # AA AC + (GTT) GT TT
    assert folded[[index[k] for k in ("AA", "AC", "GT", "TT")]].tolist() == pytest.approx([0.25] * 4)


def test_kfold_tests_every_row_once_and_keeps_repeats_together():
    seqs = ["A" * (i % 7 + 1) for i in range(20)]  # repeated sequences
    table = LabelledTable("t", seqs, ["x" if i % 2 else "y" for i in range(20)], list(range(20)))
    folds = kfold(table, 4, seed=0)
    tested = sorted(line for _, fold in folds for line in fold.lines)
    assert tested == list(range(20))
    for rest, fold in folds:
        assert not set(s.upper() for s in rest.sequences) & set(s.upper() for s in fold.sequences)


# ---- registry ----

def test_task_version_changes_with_definition_and_files(tmp_path):
    suite_path = write_suite(tmp_path, zero_shot=False, regression=False)
    first = load_suite(suite_path).task("motif").version
    assert load_suite(suite_path).task("motif").version == first  # stable
    suite_path.write_text(suite_path.read_text().replace("lr: 3.0e-3", "lr: 1.0e-3"))
    second = load_suite(suite_path).task("motif").version
    assert second != first
    with (tmp_path / "motif_test.tsv").open("a") as handle:
        handle.write("ACGTACGT\tnone\n")
    assert load_suite(suite_path).task("motif").version != second


def test_suite_errors_name_the_key_and_file(tmp_path):
    suite_path = write_suite(tmp_path, zero_shot=False, regression=False)
    text = suite_path.read_text()
    suite_path.write_text(text.replace("metrics: [accuracy", "metric: [accuracy"))
    with pytest.raises(ConfigError, match=r"suite.yaml: unknown key 'tasks\[0\].metric'"):
        load_suite(suite_path)
    suite_path.write_text(text.replace("motif_valid.tsv", "missing.tsv"))
    with pytest.raises(ConfigError, match=r"'tasks\[0\].valid': .*missing.tsv does not exist"):
        load_suite(suite_path)
    suite_path.write_text(text.replace("metrics: [accuracy, mcc, auroc]", "metrics: [spearman]"))
    with pytest.raises(ConfigError, match="spearman does not apply to kind classification"):
        load_suite(suite_path)


def test_shipped_suites_load():
    from pathlib import Path

    from janus_pretrain.config_schema import safe_load_yaml

    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "eval").glob("*.yaml")):
        if "data_root" in safe_load_yaml(path.read_text()):
            continue  # a benchmark suite reads the user's download: tests/test_benchmark_kinds.py loads it on fixtures
        assert load_suite(path).tasks, path


# ---- a whole suite on a tiny export ----

def _run(tmp_path, name, suite, seeds=2, baselines=("random", "kmer")):
    _, export = small_export(tmp_path / name)
    return evaluate(export, suite, tmp_path / name / "out", seeds=seeds, baselines=list(baselines), show_progress=False)


def test_suite_end_to_end_writes_results_with_baselines_and_spreads(tmp_path):
    suite = write_suite(tmp_path / "suite")
    results = _run(tmp_path, "a", suite)
    on_disk = json.loads((tmp_path / "a" / "out" / "results.json").read_text())
    assert on_disk["schema"] == "janus-eval-results-v1" and set(on_disk["tasks"]) == {"motif", "gc", "snv"}
    motif = on_disk["tasks"]["motif"]
    assert set(motif["summary"]) == {"pretrained", "random", "kmer"}
    assert motif["summary"]["random"]["accuracy"]["n"] == 2 and motif["summary"]["pretrained"]["accuracy"]["n"] == 1
    assert motif["summary"]["kmer"]["accuracy"]["mean"] > 0.9  # GATA is a 4-mer: the baseline must find it
    assert motif["difference"]["pretrained-random"]["mcc"]["n"] == 2
    assert on_disk["tasks"]["snv"]["not_applicable"] == {"kmer": on_disk["tasks"]["snv"]["not_applicable"]["kmer"]}
    assert on_disk["tasks"]["gc"]["summary"]["kmer"]["spearman"]["mean"] > 0.9  # GC content is a 1-mer sum
    assert results["tasks"]["snv"]["summary"]["pretrained"]["auroc"]["n"] == 1
    markdown = (tmp_path / "a" / "out" / "results.md").read_text()
    assert "pretrained-random" in markdown and "not applicable" in markdown


def test_same_seed_same_numbers_including_full_finetuning(tmp_path):
    suite = write_suite(tmp_path / "suite", n=24, length=20, zero_shot=False, regression=False, head="finetune")
    first = _run(tmp_path, "a", suite, seeds=1, baselines=("random",))
    second = _run(tmp_path, "b", suite, seeds=1, baselines=("random",))
    strip = lambda res: [{k: v for k, v in r.items() if k not in ("seconds", "history")}  # noqa: E731
                         for r in res["tasks"]["motif"]["runs"]]
    assert strip(first) == strip(second)
    assert [r["seed"] for r in first["tasks"]["motif"]["runs"]] == [0, 0]  # finetuning: seeded, not deterministic-once


def test_preserved_rng_restores_every_generator():
    import random

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    expected = (torch.rand(1), np.random.rand(), random.random())
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    with preserved_rng():
        torch.rand(5), np.random.rand(5), random.random()
    assert (torch.rand(1), np.random.rand(), random.random()) == expected


def test_flatten_rc_embedding_of_the_reverse_strand_is_the_flipped_embedding():
    from downstream_helpers import random_dna, small_model
    from janus_pretrain.evaluation.probes import embed_sequences

    backbone = small_model().backbone
    seq = random_dna(24, seed=3)
    rc = seq.translate(str.maketrans("ACGT", "TGCA"))[::-1]
    forward, backward = (embed_sequences(backbone, [s], rc_conjoin=True, pooling="flatten")[0].reshape(24, -1)
                         for s in (seq, rc))
    np.testing.assert_allclose(backward, forward[::-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(embed_sequences(backbone, [seq], pooling="flatten")[0].reshape(24, -1)[::-1],
                           embed_sequences(backbone, [rc], pooling="flatten")[0].reshape(24, -1), atol=1e-5)


def test_a_new_task_kind_is_one_class_and_runs_through_the_suite(tmp_path):
    """The extension point: a kind defined outside the package's kinds registers by subclassing and
    runs through load_suite and the harness, with a model and the per-fold records."""
    from downstream_helpers import small_model
    from janus_pretrain.evaluation.harness import SuiteRunner, run_tasks
    from janus_pretrain.evaluation.kinds import KINDS, TaskKind
    from janus_pretrain.evaluation.kinds.base import Fold, TaskData
    from janus_pretrain.evaluation.readers import read_table, regression_targets

    class GCShare(TaskKind):  # predicts a sequence's GC share from the mean of its embedding's first unit
        name = "test_gc_share"
        roles = ("test",)
        metrics = ("spearman",)
        default_metrics = metrics

        def check(self, spec, recipe, key, where):
            return ["test"]

        def load(self, task):
            table = read_table(task.files["test"])
            empty = ([], np.zeros(0))
            return TaskData([Fold(empty, empty, (table.sequences, regression_targets(table)))], counts={"test": 4})

        def not_applicable(self, model):
            return "no k-mer analogue" if model == "kmer" else None

        def deterministic(self, model, recipe):
            return model == "pretrained"

        def run(self, runner, task, data, model, seed, bar=None):
            from janus_pretrain.downstream.task_metrics import compute_metrics
            from janus_pretrain.evaluation.probes import embed_sequences

            sequences, target = data.folds[0].test
            score = embed_sequences(runner.model_for(model, seed).backbone, sequences)[:, 0]
            return [{"test": compute_metrics(task.metrics, score, target), "valid": {}, "chosen": {}}]

    try:
        rows = [("GGGGCCCC", "1.0"), ("GGCCATAT", "0.5"), ("ATATATGC", "0.25"), ("ATATATAT", "0.0")]
        (tmp_path / "gc.tsv").write_text("sequence\tlabel\n" + "".join(f"{s}\t{v}\n" for s, v in rows))
        (tmp_path / "suite.yaml").write_text("name: toy\ntasks:\n  - name: gc\n    kind: test_gc_share\n"
                                             "    test: gc.tsv\n")
        suite = load_suite(tmp_path / "suite.yaml")
        assert suite.tasks[0].kind is KINDS["test_gc_share"] and suite.tasks[0].metrics == ["spearman"]
        out = run_tasks(SuiteRunner(small_model()), suite.tasks, ["pretrained", "random", "kmer"], [0, 1],
                        show_progress=False)["gc"]
        assert out["data"] == {"test": 4} and out["not_applicable"] == {"kmer": "no k-mer analogue"}
        assert [(r["model"], r["seed"]) for r in out["runs"]] == [("pretrained", None), ("random", 0), ("random", 1)]
        assert all(set(r["test"]) == {"spearman"} for r in out["runs"])
    finally:
        del KINDS["test_gc_share"]
