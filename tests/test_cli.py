"""The `janus` command (janus_pretrain/commands/): every verb, its script wrapper, one flag style,
one-line errors with exit code 2, hidden aliases for old spellings, --version, pretrain --dry-run
without DeepSpeed, and progress bars that appear only when asked for or on a terminal."""
from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from janus_pretrain import __version__
from janus_pretrain.commands import VERBS, command_module, main
from janus_pretrain.config import load_config, to_dict

REPO = Path(__file__).resolve().parents[1]
RETIRED = {"embed": ["--window"], "score-variants": ["--window"], "evaluate": ["--tasks"], "memory": ["--gpus"],
           "make-tasks": ["--window", "--splice-window"]}


def _help(verb: str, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        command_module(verb).main(["--help"], prog=f"janus {verb}")
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_console_script_and_version(capsys):
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    target = cfg["options.entry_points"]["console_scripts"].strip()
    name, _, where = (part.strip() for part in target.partition("="))
    module, _, func = where.partition(":")
    assert name == "janus" and getattr(importlib.import_module(module), func) is main
    assert cfg["metadata"]["version"] == "attr: janus_pretrain.__version__"  # one source for --version
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"janus {__version__}"
    assert main([]) == 2 and "usage: janus <command>" in capsys.readouterr().err
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {verb} " in listing for verb in VERBS)


@pytest.mark.parametrize("verb", list(VERBS))
def test_verb_help_is_the_module_manual_and_bad_flags_are_one_line(verb, capsys):
    text = _help(verb, capsys)
    assert text.startswith(f"usage: janus {verb}")
    assert command_module(verb).__doc__.strip().splitlines()[0] in text
    listed = text.split("\noptions:\n", 1)[1]
    for old in RETIRED.get(verb, []):  # accepted (test_old_spellings_still_work) but not listed
        assert f"{old} " not in listed and f"{old}," not in listed
    with pytest.raises(SystemExit) as stop:
        command_module(verb).main(["--no-such-flag"], prog=f"janus {verb}")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith(f"error: janus {verb}: ")


def test_unknown_verb_is_one_line(capsys):
    assert main(["pretrian"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'pretrian'" in err and "pretrain" in err


@pytest.mark.parametrize("verb", [v for v, (_, script) in VERBS.items() if script])
def test_script_wrapper_is_the_same_command(verb, capsys):
    """launch/*.py and data_prep/*.py take exactly the flags of `janus <verb>` (they call its main)."""
    script = REPO / VERBS[verb][1]
    assert len(script.read_text().splitlines()) <= 12
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    as_verb = _help(verb, capsys)

    def options(text: str) -> list[str]:  # the usage line wraps by the program name's length
        return text.split("\noptions:\n", 1)[1].splitlines()
    assert options(result.stdout) == options(as_verb)


def test_old_spellings_still_work(tmp_path, repo_root):
    """Flags renamed for one style across commands keep their old spelling as a hidden alias."""
    from janus_pretrain import cli

    parser = cli.parser("doc", "janus x")
    cli.flag(parser, "--window-bp", "--window", type=int, default=1024)
    assert parser.parse_args(["--window", "16"]).window_bp == 16
    assert parser.parse_args(["--window-bp", "32"]).window_bp == 32
    assert "--window " not in parser.format_help() and "--window-bp" in parser.format_help()
    from janus_pretrain.commands.memory import main as memory

    assert memory(["--config", str(repo_root / "configs/1m.yaml"), "--gpus", "8"]) == 0


def test_dry_run_prints_the_plan_without_deepspeed(tmp_path):
    """Plain python, no launcher: the resolved config loads back as the same run, the batch plan
    follows the rank count (tiny.yaml derives its accumulation), and DeepSpeed is never imported."""
    code = ("import sys, torch.distributed as dist\n"
            "from janus_pretrain.commands import main\n"
            "rc = main(['pretrain', '--config', 'configs/tiny.yaml', '--dry-run'] + sys.argv[1:])\n"
            "print('deepspeed imported:', 'deepspeed' in sys.modules, 'dist:', dist.is_initialized())\n"
            "sys.exit(rc)\n")
    def dry(*args):
        return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    two, one, refused = dry("--ranks", "2"), dry("--ranks", "1", "--set", "parallel.ep_size=1"), dry("--ranks", "1")
    assert two.returncode == 0 and one.returncode == 0, two.stderr + one.stderr
    assert "2 x 512 bp x 1 accumulation x 2 ranks = 2,048 tokens" in two.stdout
    assert "2 x 512 bp x 2 accumulation x 1 ranks = 2,048 tokens" in one.stdout
    assert "deepspeed imported: False dist: False" in two.stdout
    assert "layer 1: mamba     + moe" in two.stdout and "175,436 parameters" in two.stdout
    assert "predicted peak" in two.stdout and "data: " in two.stdout
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "ep_size=2" in refused.stderr
    resolved = two.stdout.split("# resolved config (configs/tiny.yaml)\n", 1)[1].split("janus layer map", 1)[0]
    (tmp_path / "resolved.yaml").write_text(resolved)
    again, original = load_config(tmp_path / "resolved.yaml"), load_config(REPO / "configs/tiny.yaml")
    assert {**to_dict(again), "source": ""} == {**to_dict(original), "source": ""}
    assert yaml.safe_load(resolved)["train"]["grad_accum"] == 0  # what the YAML says; the plan resolves it


def test_tiny_config_runs_on_one_rank_with_one_override():
    """docs/training.md's single-process command: only ep_size changes; the accumulation follows."""
    config = load_config(REPO / "configs/tiny.yaml", ["parallel.ep_size=1"])
    one, two = config.check_world_size(1), load_config(REPO / "configs/tiny.yaml").check_world_size(2)
    assert (one.grad_accum, two.grad_accum) == (2, 1)
    assert one.tokens_per_step == two.tokens_per_step == 2048  # the demo's run at 2 ranks is unchanged


def test_progress_bars_only_when_asked_off_a_terminal(tmp_path):
    """stderr captured (not a TTY): no bar by default, a bar with --progress, none with --no-progress."""
    sys.path.insert(0, str(REPO / "tests"))
    from data_fixtures import write_fasta, write_genomes_yaml

    write_fasta(tmp_path / "g.fa", [("c1", "ACGT" * 3000), ("c2", "ACGT" * 600)])
    genomes = write_genomes_yaml(tmp_path, [{"name": "sp", "fasta": "g.fa", "valid_contigs": ["c2"]}])
    seen = {}
    for flag in ("", "--progress", "--no-progress"):
        result = subprocess.run([sys.executable, "-m", "janus_pretrain", "shard", "--genomes", str(genomes),
                                 "--out", str(tmp_path / f"out{flag}"), "--window-bp", "2048"] + ([flag] if flag else []),
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        seen[flag] = "sharding:" in result.stderr
    assert seen == {"": False, "--progress": True, "--no-progress": False}


WRITERS = {  # every verb that writes --out, with its other required flags (never read: --out is checked first)
    "shard": ["--genomes", "g.yaml", "--window-bp", "100"], "convert": ["--checkpoint", "ckpt"],
    "embed": ["--model", "m", "--fasta", "f.fa"], "score-variants": ["--model", "m", "--fasta", "f", "--variants", "v"],
    "finetune": ["--model", "m", "--train", "t.tsv"], "evaluate": ["--model", "m", "--suite", "s.yaml"],
    "make-tasks": ["--fasta", "f.fa", "--gtf", "g.gtf"]}


@pytest.mark.parametrize("verb", sorted(WRITERS))
def test_an_output_that_cannot_be_created_is_one_line_before_any_work(verb, tmp_path, capsys, monkeypatch):
    """Issue 27, tracebacks: --out under a regular file, in a read-only directory (os.access, which a
    read-only file system also answers), or a disk that fills while writing: one line, exit 2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    assert main([verb, *WRITERS[verb], "--out", str(tmp_path / "a_file" / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a_file is a file, not a directory" in err[0], err
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert main([verb, *WRITERS[verb], "--out", str(tmp_path / "new" / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not writable (read-only file system or permissions)" in err[0], err


def test_a_disk_that_fills_while_a_command_writes_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    from janus_pretrain.commands import score_variants

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "scores.tsv"))
    monkeypatch.setattr("janus_pretrain.downstream.variants.read_variants", full)
    assert score_variants.main(["--model", "m", "--fasta", "f", "--variants", "v", "--out",
                                str(tmp_path / "scores.tsv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scores.tsv: No space left on device" in err[0], err
