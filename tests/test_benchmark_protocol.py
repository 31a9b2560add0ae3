"""Protocol pieces of the NT / Genomic Benchmarks suites (evaluation/benchmarks/protocol.py), the
published figures, the facts table in the docs, and the fixtures against a fresh run of their script."""
from __future__ import annotations

import gzip
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from janus_pretrain.config_schema import ConfigError
from janus_pretrain.evaluation.benchmarks import official
from janus_pretrain.evaluation.benchmarks.protocol import (GridCell, RunScore, batch_mean_metric, choose_on_validation,
                                                           conjoin_logits, conjoined_inputs, fit_left_padded,
                                                           hf_train_test_split, mean_std, random_strand,
                                                           reverse_complement, torch_random_split, validation_split)
from janus_pretrain.evaluation.benchmarks.published import load_published
from janus_pretrain.tokenizer import PAD_ID, encode_numpy

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "configs" / "eval" / "published"


def test_nt_split_matches_hugging_face_datasets():
    # golden values printed by datasets 5.2.0: Dataset.from_dict({'i': range(n)}).train_test_split(test_size=0.1, seed=s)
    split = hf_train_test_split(12, 1)
    assert split.valid.tolist() == [8, 11] and split.train.tolist() == [4, 7, 5, 0, 1, 9, 2, 10, 6, 3]
    assert hf_train_test_split(25, 7).valid.tolist() == [17, 4, 19]


@pytest.mark.parametrize("rule", ["hf_train_test_split", "torch_random_split"])
@pytest.mark.parametrize("n", [10, 25, 101])
def test_validation_splits_are_disjoint_covering_and_seeded(rule, n):
    splits = [validation_split(rule, n, seed) for seed in (1, 2, 3)]
    for split in splits:
        assert not set(split.train) & set(split.valid) and sorted([*split.train, *split.valid]) == list(range(n))
    assert validation_split(rule, n, 2).valid.tolist() == splits[1].valid.tolist()
    assert len({tuple(s.valid) for s in splits}) == 3
    # HF: ceil(0.1 n); torch: floor(0.1 n) plus the first share of the round-robin remainder
    expected = -(-n // 10) if rule == "hf_train_test_split" else n // 10 + (1 if n - n // 10 - (9 * n) // 10 else 0)
    assert len(splits[0].valid) == expected


def test_gb_split_is_torchs_random_split_valid_first():
    parts = torch.utils.data.random_split(range(40), [0.1, 0.9], generator=torch.Generator().manual_seed(4))
    split = torch_random_split(40, 4)
    assert split.valid.tolist() == list(parts[0].indices) and split.train.tolist() == list(parts[1].indices)


def _grid(values: dict[tuple[float, int], list[tuple[float, float]]]) -> list[RunScore]:
    return [RunScore(GridCell(lr, bs), seed, v, t) for (lr, bs), scores in values.items()
            for seed, (v, t) in enumerate(scores, start=1)]


def test_grid_choice_uses_validation_only():
    runs = _grid({(1e-3, 128): [(0.70, 0.90), (0.72, 0.91), (0.71, 0.92)],  # best test, worse validation
                  (2e-3, 256): [(0.80, 0.60), (0.79, 0.62), (0.81, 0.58)]})
    choice = choose_on_validation(runs)
    assert choice.cell == GridCell(2e-3, 256) and choice.test.mean == pytest.approx(0.60)
    assert choice.test.std == pytest.approx(0.02) and [r.seed for r in choice.chosen] == [1, 2, 3]
    lower = choose_on_validation(runs, higher_is_better=False)  # e.g. a loss
    assert lower.cell == GridCell(1e-3, 128)


def test_per_seed_choice_and_incomplete_grids():
    runs = _grid({(1e-3, 128): [(0.9, 0.5), (0.1, 0.0)], (2e-3, 128): [(0.2, 0.0), (0.8, 0.7)]})
    per_seed = choose_on_validation(runs, rule="per_seed")
    assert per_seed.cell is None and per_seed.test.mean == pytest.approx(0.6)
    assert [r.cell.lr for r in per_seed.chosen] == [1e-3, 2e-3]
    with pytest.raises(ValueError, match=r"ran seeds \[1\].* means over different seeds are not comparable"):
        choose_on_validation(runs[:3])
    with pytest.raises(ValueError, match="seed run twice"):
        choose_on_validation(runs + runs[:1])


def test_mean_std_ddof():
    assert str(mean_std([0.80, 0.82, 0.84])) == "0.820 ± 0.020"
    assert mean_std([1.0, 2.0, 3.0], ddof=0).std == pytest.approx(np.sqrt(2 / 3))
    assert mean_std([0.5]).std == 0.0


def test_left_padding_truncates_on_the_right():
    assert fit_left_padded([1, 2, 3], 5, 9).tolist() == [9, 9, 1, 2, 3]
    assert fit_left_padded([1, 2, 3, 4, 5, 6], 4, 9).tolist() == [1, 2, 3, 4]


def toy_model(ids: np.ndarray) -> torch.Tensor:
    """Logits of a fixed, strand-asymmetric function of position and token."""
    weights = torch.arange(1, ids.size + 1, dtype=torch.float64)
    x = torch.as_tensor(ids, dtype=torch.float64)
    return torch.stack([(weights * x).sum() / 1e4, (weights.flip(0) * x ** 2).sum() / 1e5])


def conjoined(sequence: str, length: int) -> torch.Tensor:
    forward, reverse = conjoined_inputs(sequence, length, encode_numpy, PAD_ID)
    return conjoin_logits(toy_model(forward), toy_model(reverse))


def test_conjoined_prediction_is_strand_invariant_and_averages_logits():
    rng = random.Random(3)
    sequence = "".join(rng.choice("ACGT") for _ in range(37))
    for length in (37, 50, 30):  # exact, left-padded, truncated
        assert torch.allclose(conjoined(sequence, length), conjoined(reverse_complement(sequence), length))
    forward, reverse = conjoined_inputs(sequence, 50, encode_numpy, PAD_ID)
    mean_logits = (toy_model(forward) + toy_model(reverse)) / 2
    assert torch.equal(conjoined(sequence, 50), mean_logits)
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 3.0])  # logits, not probabilities, are averaged
    assert conjoin_logits(a, b).tolist() == [0.5, 1.5]
    assert not torch.allclose(conjoin_logits(a, b).softmax(0), (a.softmax(0) + b.softmax(0)) / 2)


def test_reverse_complement_palindrome_conjoins_to_its_own_prediction():
    palindrome = "GAATTC" * 5  # equal to its reverse complement
    assert reverse_complement(palindrome) == palindrome
    forward, reverse = conjoined_inputs(palindrome, 40, encode_numpy, PAD_ID)
    assert np.array_equal(forward, reverse) and forward[:10].tolist() == [PAD_ID] * 10
    assert torch.equal(conjoined(palindrome, 40), toy_model(forward))


def test_random_strand_flips_when_the_draw_exceeds_one_half():
    rng, twin = random.Random(11), random.Random(11)
    draws = [random_strand("AACG", rng) for _ in range(200)]
    assert draws == [("CGTT" if twin.random() > 0.5 else "AACG") for _ in range(200)]
    assert 70 < draws.count("CGTT") < 130


def test_batch_mean_metric_weights_batches_by_size():
    def accuracy(p, t):
        return float(np.mean(p == t))

    predictions, targets = np.array([1, 1, 0, 0, 1, 0, 1]), np.array([1, 0, 0, 1, 1, 0, 0])
    assert batch_mean_metric(accuracy, predictions, targets, 3) == pytest.approx(accuracy(predictions, targets))

    def first_is_right(p, t):  # not decomposable: 1 if the batch's first prediction is right
        return float(p[0] == t[0])

    # batches [1,1,0 | 0,1,0 | 1] vs [1,0,0 | 1,1,0 | 0]: 1, 0, 0 with weights 3, 3, 1
    assert batch_mean_metric(first_is_right, predictions, targets, 3) == pytest.approx(3 / 7)


def test_published_files_cover_the_official_tasks():
    nt, gb, eqtl = (load_published(PUBLISHED / f"{s}.yaml") for s in ("nt", "gb", "dnalongbench_eqtl"))
    assert list(nt.file.tasks) == [t.name for t in official.NT_TASKS]
    assert {k: v.metric for k, v in nt.file.tasks.items()} == {t.name: t.metric for t in official.NT_TASKS}
    assert list(gb.file.tasks) == [t.name for t in official.GB_TASKS]
    assert list(eqtl.file.tasks) == list(official.EQTL_TISSUES)
    assert {v.readme_name for v in eqtl.file.tasks.values()} == set(official.EQTL_ABBREVIATIONS)
    assert len(nt.figures("H3")) == 4 and all(len(nt.figures(t.name)) == 4 for t in official.NT_TASKS)
    # spot checks against the README table (README.md:23, 28, 38, 57); its ± is the paper's max - min
    assert nt.figure("H3", "janusdna_midattn").text() == "0.821 (range 0.021)"
    assert nt.figure("H3K4me3", "janusdna_mlp_midattn").text() == "0.688 (range 0.026)"
    assert nt.figure("splice_sites_all", "janusdna_mlp_midattn").mean == 0.967
    assert [f.text() for f in eqtl.figures("Whole_Blood")] == ["0.768", "0.794", "0.821"]
    # and against the paper's Table 1 (Genomic Benchmarks), every task with three variants
    assert all(len(gb.figures(t.name)) == 3 for t in official.GB_TASKS)
    assert gb.figure("human_nontata_promoters", "janusdna_mlp_midattn").text() == "0.957 (range 0.004)"
    assert gb.figure("dummy_mouse_enhancers_ensembl", "caduceus_ph").text() == "0.754 (range 0.074)"


def test_published_file_errors_name_the_key(tmp_path):
    text = (PUBLISHED / "nt.yaml").read_text()
    bad = tmp_path / "nt.yaml"
    bad.write_text(text.replace("janusdna: {mean: 0.824, spread: 0.012}", "janusdna_x: {mean: 0.824, spread: 0.012}"))
    with pytest.raises(ConfigError, match=r"'tasks.H3.results.janusdna_x': model 'janusdna_x' is not under models"):
        load_published(bad)
    bad.write_text(text.replace("{mean: 0.824, spread: 0.012}", "{mean: 82.4, spread: 0.012}"))
    with pytest.raises(ConfigError, match=r"'tasks.H3.results.janusdna': mean 82.4"):
        load_published(bad)
    bad.write_text(text.replace("readme_name: H3\n", "readme_nam: H3\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'tasks.H3.readme_nam'"):
        load_published(bad)
    bad.write_text(text.replace("spread: range\n", "spread: sd\n"))
    with pytest.raises(ConfigError, match=r"'spread' is 'sd', expected one of std, range, none"):
        load_published(bad)
    bad.write_text(text.replace("{mean: 0.824, spread: 0.012}", "{mean: 0.824, spread: null}"))
    with pytest.raises(ConfigError, match=r"'tasks.H3.results.janusdna': spread None but the file's 'spread' is 'range'"):
        load_published(bad)


def test_docs_show_the_facts_table():
    assert official.facts_markdown() in (REPO / "docs" / "benchmarks.md").read_text()


def _content(path: Path):
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pydict()
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    return path.read_bytes()


def test_fixtures_are_what_their_script_makes(tmp_path):
    fixtures = REPO / "tests" / "fixtures" / "benchmarks"
    subprocess.run([sys.executable, str(REPO / "tests" / "make_benchmark_fixtures.py"), "--out", str(tmp_path / "b")],
                   check=True, capture_output=True)
    made = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(fixtures) for p in fixtures.rglob("*") if p.is_file() and p.suffix != ".fai")
    for rel in made:
        if rel.suffix != ".tbi":
            assert _content(tmp_path / "b" / rel) == _content(fixtures / rel), rel
    assert sum((fixtures / rel).stat().st_size for rel in made) < 200_000
