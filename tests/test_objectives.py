"""model.objective janus | mlm | clm: janus unchanged, mlm masking, clm causality, the shared metric."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from janus_pretrain.config import ConfigError, model_config_from_dict
from janus_pretrain.engine.held_out import held_out_metrics
from janus_pretrain.model.base_prediction import predict_bases
from janus_pretrain.model.mlm_corruption import mlm_corrupt
from janus_pretrain.tokenizer import A_ID, MASK_ID, N_ID, PAD_ID, T_ID
from model_helpers import build, random_bases, tiny_config

# Recorded with the code before model.objective existed (commit a190538): build(tiny_config()),
# random_bases(2, 37), loss weight torch.rand(2, 37) from a generator seeded 5. On the recording
# machine every value was equal to the last bit after the change (compared as float.hex); the
# tolerance only absorbs other CPUs' BLAS/vector-math rounding, far below what any change of the
# mask, the read-out, the loss or the initialisation order moves (1e-3 and more).
JANUS_GOLDEN = {"loss": float.fromhex("0x1.98b2700000000p+1"), "ce_loss": float.fromhex("0x1.6485800000000p+1"),
                "aux_loss": float.fromhex("0x1.04e0b40000000p+1"),
                "logits_sum": float.fromhex("0x1.84050136a0000p+4"),
                "logits_abs_sum": float.fromhex("0x1.682fe5f40e000p+6"),
                "grad_abs_sum": float.fromhex("0x1.ee8beeac54440p+7"),
                "logits_0_5": [0.02562347799539566, 0.037128712981939316, 0.10329987853765488, -0.1110989972949028]}


def _changed_base(x: torch.Tensor, p: int) -> torch.Tensor:
    y = x.clone()
    y[:, p] = (x[:, p] - A_ID + 1) % 4 + A_ID
    return y


def test_janus_is_unchanged_against_values_recorded_before_objectives_existed():
    model = build(tiny_config())
    assert model.config.objective == "janus"
    x = random_bases(2, 37)
    weight = torch.rand(2, 37, generator=torch.Generator().manual_seed(5))
    out = model(x, labels=x, loss_weight=weight)
    out.loss.backward()
    grad = sum(p.grad.double().abs().sum() for p in model.parameters() if p.grad is not None)
    got = {"loss": out.loss.item(), "ce_loss": out.ce_loss.item(), "aux_loss": out.aux_loss.item(),
           "logits_sum": out.logits.double().sum().item(), "logits_abs_sum": out.logits.double().abs().sum().item(),
           "grad_abs_sum": grad.item(), "logits_0_5": out.logits[0, 5, A_ID:T_ID + 1].tolist()}
    for key, expected in JANUS_GOLDEN.items():
        assert got[key] == pytest.approx(expected, rel=2e-6, abs=1e-7), key


def test_config_without_objective_is_janus_and_bad_values_are_named():
    assert model_config_from_dict({}).objective == "janus"
    with pytest.raises(ConfigError, match="objective"):
        model_config_from_dict({"objective": "bert"})
    with pytest.raises(ConfigError, match="mlm_mask_fraction"):
        model_config_from_dict({"mlm_mask_fraction": 0.95, "mlm_random_fraction": 0.1})
    with pytest.raises(ConfigError, match="mlm_probability"):
        model_config_from_dict({"mlm_probability": 0.0})


# ---- mlm masking ----
def test_mlm_mask_is_a_function_of_seed_and_sample_only():
    x = random_bases(6, 300)
    a, b = mlm_corrupt(x, seed=7), mlm_corrupt(x, seed=7)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.selected, b.selected)
    # the same sample masked alone, or in another batch at another row (another rank layout)
    alone = mlm_corrupt(x[3:4], seed=7)
    shuffled = mlm_corrupt(torch.cat([random_bases(2, 300, seed=9), x[3:4]]), seed=7)
    assert torch.equal(alone.selected[0], a.selected[3]) and torch.equal(shuffled.selected[2], a.selected[3])
    assert torch.equal(shuffled.input_ids[2], a.input_ids[3])
    # different samples and different seeds get different masks
    assert not torch.equal(a.selected[0], a.selected[1])
    assert not torch.equal(mlm_corrupt(x, seed=8).selected, a.selected)
    # one base changed far from a position still changes the sample's whole mask
    assert not torch.equal(mlm_corrupt(_changed_base(x, 299), seed=7).selected[:, :200], a.selected[:, :200])


def test_mlm_mask_statistics_are_bert_80_10_10_on_bases_only():
    x = random_bases(64, 1024, seed=3)
    x[:, :40] = N_ID  # never chosen: not a base
    x[:, -24:] = PAD_ID
    out = mlm_corrupt(x, seed=0, probability=0.15, mask_fraction=0.8, random_fraction=0.1)
    bases = (x >= A_ID) & (x <= T_ID)
    chosen = out.selected
    assert not (chosen & ~bases).any()
    assert torch.equal(out.input_ids[~chosen], x[~chosen])  # nothing else touched
    n_bases, n = int(bases.sum()), int(chosen.sum())

    def within(count, total, p):  # 5 standard deviations of a binomial count
        return abs(count - total * p) <= 5 * math.sqrt(total * p * (1 - p))
    assert within(n, n_bases, 0.15), n / n_bases
    seen = out.input_ids[chosen]
    masked = int((seen == MASK_ID).sum())
    replaced = int(((seen != MASK_ID) & (seen != x[chosen])).sum())  # random bases that differ (3/4 of 10%)
    kept = int((seen == x[chosen]).sum())  # 10% unchanged + the random draws that hit the original base
    assert within(masked, n, 0.8), masked / n
    assert within(replaced, n, 0.075), replaced / n
    assert within(kept, n, 0.125), kept / n
    random_bases_drawn = seen[(seen != MASK_ID) & (seen != x[chosen])]
    assert ((random_bases_drawn >= A_ID) & (random_bases_drawn <= T_ID)).all()
    counts = torch.bincount(random_bases_drawn - A_ID, minlength=4).float()
    assert counts.min() > 0.8 * counts.mean()  # all four bases drawn about equally
    # configurable: 30% chosen, all of them [MASK]
    other = mlm_corrupt(x, seed=0, probability=0.3, mask_fraction=1.0, random_fraction=0.0)
    assert within(int(other.selected.sum()), n_bases, 0.3)
    assert (other.input_ids[other.selected] == MASK_ID).all()


def test_mlm_loss_is_ce_at_the_chosen_positions_of_the_corrupted_input():
    config = tiny_config(objective="mlm")
    model = build(config)
    model.mask_seed = 4
    x = random_bases(2, 50)
    weight = torch.rand(2, 50)
    out = model(x, labels=x, loss_weight=weight)
    corrupted = mlm_corrupt(x, 4, config.mlm_probability, config.mlm_mask_fraction, config.mlm_random_fraction)
    logits = model(corrupted.input_ids).logits  # no labels: no corruption
    ce = F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view(2, 50)
    w = weight * corrupted.selected
    torch.testing.assert_close(out.ce_loss, (ce * w).sum() / w.sum())
    assert 0 < corrupted.selected.sum() < 100


def test_mlm_read_out_sees_every_position_itself_included():
    model = build(tiny_config(objective="mlm")).eval()
    x = random_bases(2, 31)
    with torch.no_grad():
        base = model(x).logits
        for p in (0, 15, 30):
            diff = (model(_changed_base(x, p)).logits - base).abs().amax(dim=-1)  # (B, L)
            assert (diff > 0).all(), f"some position ignores x[{p}]"


# ---- clm ----
@pytest.mark.parametrize("checkpointing", ["none", "layer"])
def test_clm_logits_at_p_see_only_bases_up_to_p(checkpointing):
    model = build(tiny_config(objective="clm", activation_checkpointing=checkpointing)).eval()
    x = random_bases(2, 33)
    with torch.no_grad():
        base = model(x).logits
        for p in (0, 1, 16, 32):
            diff = (model(_changed_base(x, p)).logits - base).abs().amax(dim=-1)  # (B, L)
            assert torch.equal(diff[:, :p], torch.zeros(2, p)), f"logits before {p} changed with x[{p}]"
            assert (diff[:, p:] > 0).all(), f"logits from {p} on ignore x[{p}]"


def test_clm_loss_predicts_the_next_base_and_has_one_stream():
    model = build(tiny_config(objective="clm"))
    x = random_bases(2, 40)
    x[1, 20] = N_ID
    out = model(x, labels=x)
    ce = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(), reduction="none").view(2, 39)
    mask = torch.ones(2, 39)
    mask[1, 19] = 0  # position 19 would predict the N at 20
    torch.testing.assert_close(out.ce_loss, (ce * mask).sum() / mask.sum())
    keys = list(model.state_dict())
    assert not any(".bwd." in k or "fusion." in k for k in keys)
    janus_total = build(tiny_config()).parameter_counts()[0]
    assert model.parameter_counts()[0] < 0.6 * janus_total


# ---- the shared metric ----
@pytest.mark.parametrize("objective", ["janus", "mlm", "clm"])
def test_predict_bases_and_evaluate_agree_with_a_hand_computation(objective):
    model = build(tiny_config(objective=objective)).eval()
    x = random_bases(2, 30)
    x[0, 4] = N_ID
    with torch.no_grad():
        prediction = predict_bases(model, x)
        if objective == "janus":
            expected = model(x).logits
            predicted = torch.ones(2, 30, dtype=torch.bool)
        elif objective == "clm":
            expected = torch.cat([torch.zeros(2, 1, 16), model(x).logits[:, :-1]], dim=1)
            predicted = torch.ones(2, 30, dtype=torch.bool)
            predicted[:, 0] = False
        else:  # each base masked alone at a time gives other predictions: build the 7-pass comb by hand
            expected = torch.zeros(2, 30, 16)
            for j in range(7):
                chosen = torch.zeros(2, 30, dtype=torch.bool)
                chosen[:, j::7] = True
                chosen &= (x >= A_ID) & (x <= T_ID)
                masked = torch.where(chosen, torch.full_like(x, MASK_ID), x)
                expected[chosen] = model(masked).logits[chosen]
            predicted = (x >= A_ID) & (x <= T_ID)
    assert torch.equal(prediction.predicted, predicted)
    torch.testing.assert_close(prediction.logits[predicted], expected[predicted])

    weight = torch.ones(2, 30)
    results = held_out_metrics(model, [("sp", {"input_ids": x, "loss_weight": weight})], ["sp"], torch.device("cpu"), 30)
    counted = predicted & (x != N_ID)
    ce = F.cross_entropy(expected[counted], x[counted])
    assert results["valid/sp/loss"] == pytest.approx(ce.item(), rel=1e-5)
    assert results["valid/all/bpc"] == pytest.approx(ce.item() / math.log(2), rel=1e-5)
    assert 0 <= results["valid/sp/accuracy"] <= 1
