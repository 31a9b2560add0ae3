"""Fault injection: every file the framework reads, damaged in every way (tests/fault_matrix.py),
ends in one line naming the file, or in the documented recovery; never in a traceback.

Good copies of every file are built once per module. Each cell of the table copies its good
bundle, damages the one file and calls the reader the command calls, in-process (cheap). Then one
subprocess per command kind runs the real command on one damaged file (all started at once) and
checks what the user sees: the exit code, exactly one `error:` line naming the file, no
traceback, and every other file byte-identical afterwards. The multi-rank cases (RANK_CASES) run
launch/pretrain.py on 2 gloo ranks, under the deepspeed launcher and srun-style, started together
with the commands so that the module's wall time is about that of its slowest process.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine_launch import start_cli
from fault_matrix import (COMMAND_CASES, DAMAGE, ERROR, ERROR_TAG, ISSUE_27, KIND, KINDS, NOT_APPLICABLE, RANK_CASES,
                          READS, RECOVERS, REPO, cells, damage_file, render_markdown, write_rank_run)
from janus_pretrain.engine.distributed import free_port

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
RELIABILITY = REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- fault matrix: begin -->", "<!-- fault matrix: end -->"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """A good bundle per row, built once: the file and what it needs beside it."""
    root = tmp_path_factory.mktemp("fault_good")
    bundles = {}
    for index, kind in enumerate(KINDS):
        bundle = root / f"{index:02d}"
        bundle.mkdir()
        kind.build(bundle)
        bundles[kind.name] = bundle
    return bundles


def _copy(good: dict[str, Path], kind: str, where: Path) -> Path:
    bundle = where / "bundle"
    shutil.copytree(good[kind], bundle, symlinks=True)
    return bundle


def _params() -> list:
    params = []
    for kind, damage in cells():
        outcome = kind.outcome(damage)
        if outcome == NOT_APPLICABLE:
            continue
        marks = [pytest.mark.xfail(reason="issue 27", strict=False)] if outcome == ISSUE_27 else []
        if damage.needs_non_root and AS_ROOT:
            marks.append(pytest.mark.skip(reason="root reads a file whatever its mode"))
        params.append(pytest.param(kind, damage, id=f"{kind.name}-{damage.name}".replace(" ", "_"), marks=marks))
    return params


@pytest.mark.parametrize("kind,damage", _params())
def test_a_damaged_file_ends_in_one_line_or_the_documented_recovery(kind, damage, good, tmp_path):
    outcome = kind.outcome(damage)
    bundle = _copy(good, kind.name, tmp_path)
    path = damage_file(kind, damage, bundle)
    errors = kind.errors()
    try:
        result = kind.read(bundle)
    except errors as exc:
        message = str(exc)
        assert outcome in (ERROR, ERROR_TAG, ISSUE_27), f"{kind.name}, {damage.name}: expected {outcome}, got {message}"
        assert "\n" not in message, f"not one line: {message!r}"
        named = path.name if outcome != ERROR_TAG else path.parent.name
        assert named in message, f"the message does not name {named}: {message}"
        return
    finally:
        if path.exists() and not path.is_symlink():
            path.chmod(0o644)  # the unreadable variant: let tmp_path be cleaned up
    assert outcome in (RECOVERS, READS), f"{kind.name}, {damage.name}: read without an error ({result!r:.200})"
    if outcome == RECOVERS:
        kind.recovered(bundle, result)


def test_every_damage_is_tried_on_every_file_it_applies_to():
    """Guards the table: no row opts out of a damage except by kind (encodings: text only)."""
    for kind in KINDS:
        for damage in DAMAGE.values():
            outcome = kind.outcome(damage)
            assert outcome != NOT_APPLICABLE or damage.text_only or damage.name == "wrong top-level type", \
                (kind.name, damage.name)
    assert len(KIND) == len(KINDS), "row names must be unique"


def test_the_reliability_doc_shows_this_table():
    text = RELIABILITY.read_text()
    assert BEGIN in text and END in text, f"{RELIABILITY} lacks the {BEGIN} ... {END} section"
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == render_markdown().strip(), (
        f"docs/reliability.md's fault matrix differs from tests/fault_matrix.py; paste in the output of "
        f"python -c 'import sys; sys.path.insert(0, \"tests\"); import fault_matrix; "
        f"print(fault_matrix.render_markdown())'")


# ---- the real commands, one subprocess each ----

def _digests(bundle: Path, skip: Path) -> dict[str, str]:
    return {str(p.relative_to(bundle)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(bundle.rglob("*")) if p.is_file() and not p.is_symlink() and p != skip
            and skip not in p.parents}


@pytest.fixture(scope="module")
def launched(good, tmp_path_factory):
    """Every COMMAND_CASES command and RANK_CASES run started at once; their processes."""
    root = tmp_path_factory.mktemp("fault_commands")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "JANUS_CACHE_DIR": str(root / "cache")}
    ranks = []
    for index, case in enumerate(RANK_CASES):
        run = root / f"ranks{index}"
        run.mkdir()
        config = write_rank_run(case, good["shard tar"] / "shards", run)
        before = _digests(run / "checkpoints", run / case.damaged)
        if case.launcher == "deepspeed":
            deepspeed = Path(sys.executable).parent / "deepspeed"
            log = open(run / "log_rank0.txt", "w")  # the launcher's output holds both ranks'
            procs = [subprocess.Popen([str(deepspeed), "--num_accelerators", "2", "--master_port", str(free_port()),
                                       "launch/pretrain.py", "--config", str(config)], cwd=REPO, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)]
        else:
            procs = start_cli(2, ["--config", str(config)], run)
        ranks.append((case, run, before, procs))
    started = []
    for index, case in enumerate(COMMAND_CASES):
        bundle = _copy(good, case.kind, root / f"{index:02d}")
        path = damage_file(KIND[case.kind], DAMAGE[case.damage], bundle)
        before = _digests(bundle, path)
        args = [a.replace("{b}", str(bundle)) for a in case.args]
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started.append((case, bundle, path, before, proc))
    return started, ranks


@pytest.fixture(scope="module")
def command_runs(launched):
    results = {}
    for case, bundle, path, before, proc in launched[0]:
        out, err = proc.communicate(timeout=300)
        results[case.command] = (case, bundle, path, before, proc.returncode, out, err)
    return results


@pytest.fixture(scope="module")
def rank_runs(launched):
    results = {}
    for case, run, before, procs in launched[1]:
        codes = [proc.wait(timeout=300) for proc in procs]
        results[case.name] = (case, run, before, codes)
    return results


@pytest.mark.parametrize("command", [c.command for c in COMMAND_CASES])
def test_the_command_on_a_damaged_file_prints_one_line_and_writes_nothing(command, command_runs):
    case, bundle, path, before, code, out, err = command_runs[command]
    shown = f"{command} on {case.kind} ({case.damage}): exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    assert code == case.code, shown
    assert "Traceback" not in err and "Traceback" not in out, shown
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if case.code == 2:
        assert len(errors) == 1 and path.name in errors[0], shown
    else:
        assert not errors and (bundle / case.wrote).is_file(), shown
    after = _digests(bundle, path)
    assert {k: v for k, v in after.items() if k in before} == before, "good files changed"
    if case.code == 2:
        assert set(after) == set(before), f"a failed command wrote {sorted(set(after) - set(before))}"


@pytest.mark.parametrize("name", [c.name for c in RANK_CASES])
def test_two_ranks_on_a_damaged_checkpoint_leave_with_one_line_and_no_traceback(name, rank_runs):
    case, run, before, codes = rank_runs[name]
    output = "\n".join(p.read_text() for p in sorted(run.glob("log_rank*.txt")))
    shown = f"{name}: exit codes {codes}\n{output[-6000:]}"
    assert set(codes) == {2}, shown
    assert "Traceback" not in output, shown
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and case.error in errors[0], shown
    assert case.named in output, shown
    after = _digests(run / "checkpoints", run / case.damaged)
    assert after == before, "checkpoint files changed"
