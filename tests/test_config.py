"""The typed config tree: unknown keys and wrong types name the key and the file; overrides."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from janus_pretrain.config import ConfigError, ModelConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_maps_onto_sections_and_overrides_apply(tmp_path):
    path = _write(tmp_path, "model:\n  d_model: 64\n  n_heads: 4\ntrain:\n  steps: 7\noptimizer:\n  betas: [0.9, 0.99]\n")
    config = load_config(path, overrides=["model.d_model=144", "optimizer.lr=1e-3", "data.mixture={scer: 2}"])
    assert config.model.d_model == 144 and config.train.steps == 7
    assert config.optimizer.lr == 1e-3 and config.optimizer.betas == [0.9, 0.99]
    assert config.data.mixture == {"scer": 2.0}
    assert config.source == str(path)


@pytest.mark.parametrize("text, fragment", [
    ("model:\n  d_modle: 64\n", "unknown key 'model.d_modle'"),
    ("modle:\n  d_model: 64\n", "unknown key 'modle'"),
    ("model:\n  d_model: wide\n", "'model.d_model' must be int"),
    ("model:\n  tie_mamba_projections: 1\n", "'model.tie_mamba_projections' must be bool"),
    ("model:\n  kernels: triton\n", "'model.kernels' must be one of"),
    ("optimizer:\n  betas: 0.9\n", "'optimizer.betas' must be a list"),
    ("model:\n  attn_layer_period: 4\n  attn_layer_offset: 4\n", "attn_layer_offset=4 must be < attn_layer_period=4"),
    ("model:\n  d_model: 30\n  n_heads: 4\n", "model.d_model=30 must be divisible"),
    ("train:\n  steps: 0\n", "train.steps must be >= 1"),
    ("schedule:\n  warmup_fraction: 1.5\n", "schedule.warmup_fraction=1.5 must be a finite number in [0, 1)"),
    ("parallel:\n  ep_size: 3\n", "parallel.ep_size=3 does not divide model.num_experts=16"),
    ("parallel:\n  zero_stage: 0\n", "parallel.zero_stage=0 is not supported with MoE"),
    ("checkpoint:\n  keep: 0\n", "checkpoint.keep must be >= 1"),
])
def test_bad_config_errors_name_the_key_and_the_file(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert fragment in str(error.value)
    assert str(path) in str(error.value)


def test_paths_in_the_yaml_are_relative_to_it_and_overrides_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "run.yaml"
    path.write_text("data:\n  manifest: ../shards/manifest.json\ncheckpoint:\n  dir: ../runs/a/checkpoints\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path, overrides=["logging.dir=tb"])
    assert config.data.manifest == str(tmp_path / "shards" / "manifest.json")
    assert config.checkpoint.dir == str(tmp_path / "runs" / "a" / "checkpoints")
    assert config.logging.dir == str(elsewhere / "tb")
    overridden = load_config(path, overrides=["data.manifest=s/manifest.json"])
    assert overridden.data.manifest == str(elsewhere / "s" / "manifest.json")


def test_runtime_fields_are_not_architecture():
    base = ModelConfig()
    assert base.architecture() == ModelConfig(kernels="reference", activation_checkpointing="layer",
                                              scan_chunk=8, loss_chunk=64).architecture()
    assert base.architecture() != ModelConfig(d_model=144).architecture()
    assert "kernels" not in base.architecture() and "d_model" in base.architecture()


def test_override_of_a_missing_key_is_refused(tmp_path):
    path = _write(tmp_path, "model:\n  d_model: 64\n")
    with pytest.raises(ConfigError, match="unknown key 'model.width'"):
        load_config(path, overrides=["model.width=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, overrides=["model.d_model"])


def test_layer_map_follows_period_and_offset():
    config = ModelConfig(n_layers=8, attn_layer_period=8, attn_layer_offset=4, expert_layer_period=2,
                         expert_layer_offset=1)
    layer_map = config.layer_map()
    assert [i for i, (mixer, _) in enumerate(layer_map) if mixer == "attention"] == [4]
    assert [i for i, (_, ffn) in enumerate(layer_map) if ffn == "moe"] == [1, 3, 5, 7]
    assert "layer 4: attention + swiglu" in config.describe_layers()
    no_attention = ModelConfig(attn_layer_period=0)
    assert all(mixer == "mamba" for mixer, _ in no_attention.layer_map())


def _float_keys() -> list[tuple[str, str, str]]:
    """(section, field, YAML value holding .nan) of every float a run config has, found by introspection,
    so a float key added later is covered too."""
    from janus_pretrain.config import RunConfig

    keys = []
    for section in dataclasses.fields(RunConfig):
        default = getattr(RunConfig(), section.name)
        if not dataclasses.is_dataclass(default):
            continue
        for f in dataclasses.fields(default):
            value = getattr(default, f.name)
            if isinstance(value, float):
                keys.append((section.name, f.name, "{}"))
            elif isinstance(value, list) and value and isinstance(value[0], float):
                keys.append((section.name, f.name, "[0.5, {}]"))
    keys.append(("data", "mixture", "{{scer: {}}}"))
    return keys


@pytest.mark.parametrize("section, key, template", _float_keys())
@pytest.mark.parametrize("bad", [".nan", ".inf", "-.inf"])
def test_every_float_must_be_finite(tmp_path, section, key, template, bad):
    path = _write(tmp_path, f"{section}:\n  {key}: {template.format(bad)}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {section}.{key}") and "must be a finite number" in message
    assert "\n" not in message


def test_float_keys_are_found_and_ranges_hold(tmp_path):
    found = {f"{s}.{k}" for s, k, _ in _float_keys()}
    assert {"optimizer.lr", "optimizer.betas", "optimizer.eps", "optimizer.weight_decay", "schedule.min_lr",
            "train.grad_clip", "data.max_n_frac", "data.repeat_weight", "model.dt_min", "model.dt_max",
            "model.router_aux_loss_coef", "data.mixture"} <= found
    for text, fragment in [("optimizer:\n  lr: 0.0\n", "optimizer.lr=0.0 must be a finite number in (0, inf)"),
                           ("optimizer:\n  betas: [0.9, 1.0]\n", "optimizer.betas[1]=1.0 must be"),
                           ("data:\n  mixture: {scer: -1.0}\n", "data.mixture.scer=-1.0 must be"),
                           ("data:\n  max_n_frac: 1.5\n", "data.max_n_frac=1.5 must be"),
                           ("model:\n  dt_min: 0.5\n  dt_max: 0.1\n", "model.dt_min=0.5 must be <= model.dt_max=0.1"),
                           ("data:\n  on_corrupt: ignore\n", "'data.on_corrupt' must be one of ['error', 'skip']")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            load_config(_write(tmp_path, text))
    data = load_config(_write(tmp_path, "data:\n  verify_shards: false\n  on_corrupt: skip\n")).data
    assert (data.verify_shards, data.on_corrupt) == (False, "skip")


@pytest.mark.parametrize("override, key", [
    ("train.global_batch_tokens=1000000000000000000000", "train.global_batch_tokens=1000000000000000000000 is above its limit"),
    ("model.n_layers=100000", "model.n_layers=100000 is above its limit 1,024"),
    ("model.d_model=1048576", "model.d_model=1048576 is above its limit"),
    ("data.seq_len=1000000000", "data.seq_len=1000000000 is above its limit"),
    ("train.grad_accum=100000000", "train.grad_accum=100000000 is above its limit"),
])
def test_sizes_no_run_can_use_are_refused_at_load(override, key):
    """Issue 27, silent 6: refused before anything is built, naming the file, the key and the limit."""
    with pytest.raises(ConfigError, match=re.escape(f"configs/tiny.yaml: {key}")):
        load_config(REPO / "configs" / "tiny.yaml", [override])


def test_a_global_batch_that_needs_an_absurd_accumulation_is_refused():
    config = load_config(REPO / "configs" / "tiny.yaml", ["train.global_batch_tokens=1099511627776",
                                                          "train.grad_accum=0", "train.micro_batch=1",
                                                          "data.seq_len=64"])
    with pytest.raises(ConfigError, match=r"needs grad_accum=8,589,934,592 .* above its limit 65,536"):
        config.check_world_size(2)


def test_a_yaml_file_cut_anywhere_is_refused_in_one_line(tmp_path):
    """PyYAML's own message spans several lines and quotes the text; ours is one line with the position
    (the fault matrix cuts files at fixed fractions, so only some cut points were seen there)."""
    from janus_pretrain.evaluation.registry import load_suite
    text = (Path(__file__).parent.parent / "configs" / "eval" / "nt.yaml").read_text()
    seen = 0
    for cut in range(1, len(text), 7):
        path = tmp_path / "suite.yaml"
        path.write_text(text[:cut])
        try:
            load_suite(path)
        except ConfigError as exc:
            assert "\n" not in str(exc), str(exc)
            seen += "not valid YAML: line " in str(exc)
    assert seen > 0
