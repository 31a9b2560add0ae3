"""bench/finetune_cost.py's count of a full benchmark suite's work (docs/benchmarks.md's GPU estimates
rest on it): every task, grid cell, seed and model, each epoch's rows once, validation on both strands."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from finetune_cost import suite_work  # noqa: E402

from janus_pretrain.evaluation.benchmarks import official  # noqa: E402


def test_nt_and_gb_runs_are_tasks_times_cells_times_seeds_times_models():
    assert suite_work("nt").runs == 18 * 6 * 10 * 2  # 18 tasks, lr {1e-3, 2e-3} x batch {128, 256, 512}, seeds 1-10
    assert suite_work("gb").runs == 8 * 6 * 5 * 2
    assert suite_work("nt", models=1).runs == 18 * 6 * 10


@pytest.mark.parametrize("suite, tasks, epochs", [("nt", official.NT_TASKS, 20), ("gb", official.GB_TASKS, 10)])
def test_every_train_row_is_counted_once_per_epoch_validation_on_both_strands(suite, tasks, epochs):
    work = suite_work(suite, models=1)
    bases_per_epoch = sum(t.train_rows * t.max_length for t in tasks)  # train + valid rows, one strand
    assert work.train_tokens + work.forward_tokens / 2 == work.runs // len(tasks) * epochs * bases_per_epoch
    assert 0.09 < work.forward_tokens / 2 / (work.train_tokens + work.forward_tokens / 2) < 0.11  # 10% held out


def test_eqtl_work_is_three_windows_of_450_kbp_per_record_and_epoch():
    one = suite_work("dnalongbench_eqtl", models=1, eqtl_records=1)
    assert one.runs == 9 * 2  # tissues x heads (alt, ref-vs-alt difference)
    assert one.train_tokens == 3 * 450_000 * 3  # alt head 1 window + difference head 2, 3 epochs
    assert suite_work("dnalongbench_eqtl", eqtl_records=10).train_tokens == 2 * 10 * one.train_tokens
