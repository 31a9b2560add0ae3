"""The benchmark task kinds (evaluation/kinds/nt.py, genomic_benchmarks.py, dnalongbench_eqtl.py) and
their suites (configs/eval/nt.yaml, gb.yaml, dnalongbench_eqtl.yaml) on the fixtures of
tests/fixtures/benchmarks/: the suites list the official tasks, the protocol pieces the kinds add
(strand conjoining of left-padded inputs, grid choice on validation, F1 of class 1), and runs end
to end through `janus evaluate`, one of them on the imported golden official checkpoint."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from janus_pretrain.commands.evaluate import main as evaluate_main, parse_grid
from janus_pretrain.config import ConfigError
from janus_pretrain.downstream.task_metrics import METRICS
from janus_pretrain.evaluation.benchmarks import official
from janus_pretrain.evaluation.benchmarks.published import load_published
from janus_pretrain.evaluation.kinds import KINDS
from janus_pretrain.evaluation.registry import Scale, load_suite

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "configs" / "eval"
FIXTURES = REPO / "tests" / "fixtures" / "benchmarks"
TOY_EQTL = REPO / "tests" / "fixtures" / "benchmark_suites" / "toy_eqtl.yaml"


def test_f1_binary_is_the_f1_of_class_one():
    rng = np.random.default_rng(0)
    target, scores = rng.integers(0, 2, 50), rng.normal(size=(50, 2))
    predicted = scores.argmax(1)
    tp = int(((predicted == 1) & (target == 1)).sum())
    fp, fn = int(((predicted == 1) & (target == 0)).sum()), int(((predicted == 0) & (target == 1)).sum())
    assert METRICS["f1_binary"].compute(scores, target) == pytest.approx(2 * tp / (2 * tp + fp + fn))


@pytest.mark.parametrize("suite, kind, tasks", [("nt", "nt", official.NT_TASKS),
                                                ("gb", "genomic_benchmarks", official.GB_TASKS)])
def test_sequence_suites_list_the_official_tasks_with_their_metric(suite, kind, tasks):
    data = {"nt": FIXTURES / "nt", "gb": FIXTURES / "gb"}[suite]
    present = sorted(p.name for p in data.iterdir())
    loaded = load_suite(SUITES / f"{suite}.yaml", present, data)
    assert [t.name for t in loaded.tasks] == [t.name for t in tasks if t.name in present]
    for task in loaded.tasks:
        assert task.kind.name == kind and task.metrics == [official.task(suite, task.name).metric]
        assert task.files and all(p.is_file() for p in task.files.values())
    with pytest.raises(ConfigError, match=r"data_root .*missing.*no directory|does not exist|not a directory"):
        load_suite(SUITES / f"{suite}.yaml", [tasks[0].name], FIXTURES / "missing")


def test_eqtl_suite_lists_the_nine_tissues_and_reads_a_tissue_config():
    from janus_pretrain.config_schema import safe_load_yaml

    raw = safe_load_yaml((SUITES / "dnalongbench_eqtl.yaml").read_text())
    assert [t["name"] for t in raw["tasks"]] == list(official.EQTL_TISSUES)
    task = load_suite(TOY_EQTL).tasks[0]
    assert set(task.files) == {"config", "eqtl_table", "regions", "regions_index", "genome"}
    with pytest.raises(ConfigError, match=r"gtex_hg38.Whole_Blood.config: config file not found"):
        load_suite(SUITES / "dnalongbench_eqtl.yaml", ["Whole_Blood"], FIXTURES / "eqtl")


@pytest.mark.parametrize("entry, message", [
    ("{name: H5, kind: nt}", r"'tasks\[0\].name': 'H5' is not a task of the nt suite"),
    ("{name: H3, kind: nt, recipe: {lr: 0.1}}", r"'tasks\[0\].recipe': a nt task runs the official protocol"),
    ("{name: H3, kind: nt, train: x.tsv}", r"'tasks\[0\].train': a nt task reads the suite's data_root"),
])
def test_benchmark_entries_take_no_files_and_no_recipe(tmp_path, entry, message):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: x\ndata_root: {FIXTURES / 'nt'}\ntasks:\n  - {entry}\n")
    with pytest.raises(ConfigError, match=message):
        load_suite(suite)


def test_a_scaled_down_run_has_another_version_and_old_versions_stay():
    full = load_suite(SUITES / "nt.yaml", ["H3"], FIXTURES / "nt").tasks[0]
    small = load_suite(SUITES / "nt.yaml", ["H3"], FIXTURES / "nt", Scale(max_train=8)).tasks[0]
    assert full.version != small.version and "scale" in small.definition() and "scale" not in full.definition()
    assert "root" not in load_suite(SUITES / "bundled.yaml").tasks[0].definition()["task"]


def test_conjoined_left_padded_inputs_make_the_prediction_strand_symmetric():
    from downstream_helpers import small_model

    from janus_pretrain.downstream.classification import ViewClassifier
    from janus_pretrain.evaluation.benchmarks.protocol import conjoined_inputs, reverse_complement
    from janus_pretrain.tokenizer import PAD_ID, encode_numpy

    torch.manual_seed(0)
    model = ViewClassifier(small_model().backbone, 2).eval()
    rng = random.Random(0)
    sequence = "".join(rng.choice("ACGT") for _ in range(40))

    def views(s):
        return torch.from_numpy(np.stack(conjoined_inputs(s, 48, encode_numpy, PAD_ID)))[None]  # (1, 2, 48): padded left
    with torch.no_grad():
        forward, reverse = model(views(sequence))[0], model(views(reverse_complement(sequence)))[0]
        one_strand = model(views(sequence)[:, 0])[0]
    assert (views(sequence)[0, :, :8] == PAD_ID).all()
    assert torch.allclose(forward, reverse, atol=1e-5) and not torch.allclose(forward, one_strand, atol=1e-4)


def _run(model, seed, lr, batch, valid, test):
    return {"model": model, "seed": seed, "fold": 0, "valid": {"mcc": valid}, "test": {"mcc": test},
            "chosen": {"lr": lr, "batch_size": batch}}


def test_the_grid_cell_is_chosen_on_mean_validation_never_on_test():
    task = load_suite(SUITES / "nt.yaml", ["H3"], FIXTURES / "nt").tasks[0]
    runs = [_run("pretrained", 1, 1e-3, 128, 0.5, 0.9), _run("pretrained", 2, 1e-3, 128, 0.5, 0.9),
            _run("pretrained", 1, 2e-3, 128, 0.7, 0.1), _run("pretrained", 2, 2e-3, 128, 0.4, 0.2),
            {"model": "kmer", "seed": None, "fold": 0, "valid": {"mcc": 0.3}, "test": {"mcc": 0.3}, "chosen": {"k": 3}}]
    kept, extra = KINDS["nt"].finalise(task, runs)
    assert extra["grid"]["pretrained"]["cell"] == {"lr": 2e-3, "batch_size": 128}  # mean valid 0.55 > 0.5
    assert [r["test"]["mcc"] for r in kept if r["model"] == "pretrained"] == [0.1, 0.2]
    assert [r["model"] for r in kept].count("kmer") == 1 and len(extra["grid_runs"]) == 4


def test_grid_flag_parses_cells_and_names_a_bad_one(capsys):
    assert parse_grid("1e-3x128, 2e-3x256") == ((1e-3, 128), (2e-3, 256))
    assert evaluate_main(["--model", "m", "--suite", "s", "--out", "o", "--grid", "1e-3*128"]) == 2
    assert "--grid: '1e-3*128' is not LRxBATCH" in capsys.readouterr().err


def _evaluate(args: list[str]) -> dict:
    assert evaluate_main([*args, "--no-progress"]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_official_golden_checkpoint_runs_an_nt_task_through_janus_evaluate(tmp_path):
    """Issue 23 item 5: the imported official fixture, one NT-format task, one seed, one cell, one epoch."""
    from janus_pretrain.official.convert import import_official

    export = import_official(REPO / "tests" / "fixtures" / "janusdna_official" / "w_midattn_tiny.ckpt",
                             tmp_path / "imported").export_dir
    results, markdown = _evaluate(["--model", str(export), "--suite", str(SUITES / "nt.yaml"), "--out",
                                   str(tmp_path / "out"), "--data-root", str(FIXTURES / "nt"), "--only", "H3",
                                   "--seeds", "1", "--grid", "1e-3x8", "--epochs", "1", "--baselines", "kmer",
                                   "--window-bp", "128"])
    h3 = results["tasks"]["H3"]
    assert h3["seeds"] == [official.NT_PROTOCOL.seeds[0]] and h3["data"]["distributed_train"] == 20
    assert h3["data"]["valid"] == 2 and h3["data"]["test"] == 8  # ceil(10% of 20) held out by the seed's split
    run = h3["runs"][0]
    assert run["chosen"]["lr"] == 1e-3 and run["chosen"]["input_length"] == 128  # official 500, cut by --window-bp
    assert -1 <= run["test"]["mcc"] <= 1 and "mcc" in run["test_batch_mean"]
    assert set(h3["summary"]) == {"pretrained", "kmer"} and h3["summary"]["pretrained"]["mcc"]["n"] == 1
    published = load_published(SUITES / "published" / "nt.yaml").figures("H3")
    assert {f["label"] for f in h3["published"]} == {f.label for f in published}
    row = next(line for line in markdown.splitlines() if line.startswith("| H3 | mcc |"))
    assert all(f.text() in row for f in published)


def test_genomic_benchmarks_task_through_janus_evaluate(tmp_path):
    from downstream_helpers import small_export

    _, export = small_export(tmp_path)
    results, markdown = _evaluate(["--model", str(export), "--suite", str(SUITES / "gb.yaml"), "--out",
                                   str(tmp_path / "out"), "--data-root", str(FIXTURES / "gb_package"), "--only",
                                   "human_nontata_promoters", "--seeds", "1", "--grid", "2e-3x4", "--epochs", "1",
                                   "--window-bp", "64", "--baselines", "random"])
    task = results["tasks"]["human_nontata_promoters"]
    assert task["metrics"] == ["accuracy"] and task["grid"]["pretrained"]["cell"]["batch_size"] == 4
    assert task["runs"][0]["chosen"]["input_length"] == 64 and task["recipe"] is not None
    assert task["data"]["valid"] + task["data"]["train"] == task["data"]["distributed_train"]
    assert task["version"] != load_suite(SUITES / "gb.yaml", ["human_nontata_promoters"], FIXTURES / "gb_package").tasks[0].version
    assert "official GB protocol (scaled down" in markdown


def test_eqtl_kind_builds_the_windows_and_records_the_skips():
    task = load_suite(TOY_EQTL, scale=Scale(max_train=2)).tasks[0]  # the config's 12,000-base windows
    data = task.kind.load(task)
    windows = data.counts["windows"]
    assert (windows["train"]["kept"], windows["train"]["different_chromosome"], windows["train"]["too_far"]) == (3, 1, 1)
    assert windows["valid"]["unknown_strand"] == 1 and data.counts["train"] == 2 and data.counts["test"] == 2
    (subset, rows), labels = data.folds[0].test
    assert list(labels) == [subset.plans.plans[i].record.label for i in rows]
    from janus_pretrain.evaluation.kinds.dnalongbench_eqtl import WindowInputs, _test_views

    inputs = WindowInputs(subset, rows, _test_views("alt_ref_difference"), "janus")
    assert inputs.lengths() == [12000, 12000] and inputs[0].shape == (4, 12000)  # ref, alt and their reverse complements
    window = subset.window(rows[0])
    assert window.alt != window.ref and window.alt[window.alt_offset] == subset.plans.plans[rows[0]].record.allele2[0]


def test_eqtl_heads_are_set_side_by_side_paired_by_seed():
    task = load_suite(TOY_EQTL).tasks[0]

    def run(seed, head, auroc):
        return {"model": "pretrained", "seed": seed, "fold": 0, "head": head, "valid": {}, "test": {"auroc": auroc},
                "chosen": {"head": head}}
    runs = [run(1, "alt", 0.6), run(1, "alt_ref_difference", 0.7), run(2, "alt", 0.5), run(2, "alt_ref_difference", 0.8)]
    kept, extra = KINDS["dnalongbench_eqtl"].finalise(task, runs)
    assert [r["test"]["auroc"] for r in kept] == [0.6, 0.5]  # the official head is the task's result
    heads = extra["heads"]["pretrained"]
    assert heads["difference_minus_alt"]["mean"] == pytest.approx(0.2) and heads["difference_minus_alt"]["std"] == pytest.approx(
        np.std([0.1, 0.3], ddof=1))


@pytest.mark.slow
def test_eqtl_kind_runs_both_heads_through_janus_evaluate(tmp_path):
    from downstream_helpers import small_export

    _, export = small_export(tmp_path)
    results, markdown = _evaluate(["--model", str(export), "--suite", str(TOY_EQTL), "--out", str(tmp_path / "out"),
                                   "--seeds", "1", "--window-bp", "4000", "--epochs", "1", "--baselines", "kmer"])
    task = results["tasks"]["Toy_Tissue"]
    heads = task["heads"]["pretrained"]
    assert heads["alt"]["mean"] == task["summary"]["pretrained"]["auroc"]["mean"]
    assert heads["difference_minus_alt"]["mean"] == pytest.approx(heads["alt_ref_difference"]["mean"] - heads["alt"]["mean"])
    assert [r["head"] for r in task["head_runs"]] == ["alt_ref_difference"] and "kmer" in task["summary"]
    assert task["runs"][0]["chosen"]["state"] == "last epoch" and "alt-ref difference head" in markdown
