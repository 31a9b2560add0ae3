"""Every run YAML in configs/ loads (genome lists in configs/genomes/ with the data parser), and
the model sections are the ones the paper describes."""
from __future__ import annotations

from pathlib import Path

import pytest

from janus_pretrain.config import load_config
from janus_pretrain.data.genomes import read_genomes
from janus_pretrain.config import batch_plan
from janus_pretrain.engine.deepspeed_config import deepspeed_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUNS = sorted(CONFIGS.glob("*.yaml"))


def test_the_four_runs_exist():
    assert {p.stem for p in RUNS} >= {"tiny", "1k", "131k", "1m"}


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.name)
def test_run_config_loads_and_gives_a_deepspeed_config(path):
    config = load_config(path)
    world = 2 if path.stem in ("tiny", "small") else 8  # the 2-rank CPU runs (demo, evaluation)
    plan = batch_plan(config, world)
    ds = deepspeed_config(config, plan)
    assert ds["train_batch_size"] == plan.micro_batch * plan.grad_accum * world
    assert ds["zero_optimization"]["stage"] == 2


@pytest.mark.parametrize("path", sorted((CONFIGS / "genomes").glob("*.yaml")), ids=lambda p: p.name)
def test_genome_lists_load(path):
    if path.stem == "hg38" and not (CONFIGS.parent / "data" / "hg38" / "hg38.ml.fa").is_file():
        from janus_pretrain.data.genomes import DataPrepError  # the user downloads hg38; the list itself is valid
        with pytest.raises(DataPrepError, match=r"hg38\.yaml:\d+: FASTA file of species 'hsap' not found"):
            read_genomes(path)
        return
    assert read_genomes(path)


def test_reference_models():
    k1, k131, m1 = (load_config(CONFIGS / f"{name}.yaml") for name in ("1k", "131k", "1m"))
    assert k1.model.layer_map() == [("attention" if i == 4 else "mamba", "moe" if i % 2 else "swiglu")
                                    for i in range(8)]
    assert (k1.model.d_model, k1.model.num_experts, k1.model.top_k, k1.model.ffn_dim) == (72, 16, 2, 288)
    assert (k1.data.seq_len, k1.train.global_batch_tokens, k1.optimizer.lr) == (1024, 2**20, 8e-3)
    assert k131.model.d_model == m1.model.d_model == 144
    assert all(mixer == "mamba" for mixer, _ in k131.model.layer_map() + m1.model.layer_map())
    assert (k131.data.seq_len, m1.data.seq_len, m1.train.micro_batch) == (131072, 2**20, 1)
    assert m1.model.activation_checkpointing == "layer"
    for config in (k1, k131):  # 2^20 tokens per step on 1 to 8 GPUs
        for world in (1, 2, 4, 8):
            assert batch_plan(config, world).tokens_per_step == 2**20


def test_tiny_is_a_two_rank_zero2_expert_parallel_demo():
    tiny = load_config(CONFIGS / "tiny.yaml")
    assert (tiny.parallel.zero_stage, tiny.parallel.ep_size) == (2, 2)
    assert batch_plan(tiny, 2).tokens_per_step == tiny.train.global_batch_tokens


OFFICIAL = sorted((CONFIGS / "janusdna").glob("*.yaml"))


def test_the_five_official_recipes_exist():
    assert {p.stem for p in OFFICIAL} == {"w_midattn_32dim", "wo_midattn_32dim", "w_midattn_72dim",
                                          "wo_midattn_72dim", "wo_midattn_144dim"}


@pytest.mark.parametrize("path", OFFICIAL, ids=lambda p: p.name)
def test_official_recipes_are_official_models(path):
    """Each preset loads, trains 2^20 tokens per step on 8 GPUs with every official option on, and
    its model written in official names reads back (official/variant.py) as the same architecture:
    the preset is a model the official code can hold."""
    import torch

    from janus_pretrain.model import JanusForPretraining
    from janus_pretrain.official.names import ours_to_official
    from janus_pretrain.official.variant import model_config_from_official, official_config

    config = load_config(path)
    assert batch_plan(config, 8).tokens_per_step == 2**20
    m = config.model
    assert (m.tokenizer, m.init, m.aux_loss_pooling, m.loss_targets, m.final_mlp_kind, m.norm_eps) == \
        ("janusdna", "janusdna", "stream_pooled", "non_pad", "janusdna", 1e-6)
    assert (config.optimizer.no_decay, config.schedule.curve, config.train.seed) == ("janusdna", "timm_cosine", 2222)
    assert m.fusion_scale_dim == {32: 16, 72: 32, 144: 64}[m.d_model]
    assert (m.attn_layer_period > 0) == path.stem.startswith("w_")
    torch.manual_seed(0)
    state = ours_to_official(JanusForPretraining(m).state_dict(), m)
    back = model_config_from_official(official_config(m), state, str(path))
    assert back.architecture() == m.architecture()
