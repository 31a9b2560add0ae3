"""Every command in README.md and docs/*.md runs as written (docs that cannot rot).

Commands are taken from the markdown: every line of ```bash/sh/shell fences (continuations joined,
comments dropped), every ```python fence, every indented line that starts with a command word
and every inline `span` that does. Each must have an entry in DOC_COMMANDS saying how it is
checked, and every entry must still be in the docs, so a new docs command without a check fails
test_every_docs_command_has_a_check (and so does a stale entry):

- Run(...): executed with bash in a sandbox directory (a copy of configs/, the repo's data/ and
  scripts, `janus` and `python` on PATH) after optional `[...]` groups are dropped and the
  listed substitutions/appends shrink it to tiny sizes (2 training steps, 1 seed...); exit 0
  expected, plus a check of what it wrote where one is given. One sharded dataset (the docs'
  own `janus shard ... --window-bp 4096`) and one checkpoint/export (the docs' own pretrain and
  convert commands) are made once and shared.
- Help(why): a synopsis with placeholders, or a long benchmark: `--help` of its program must
  work and list every --flag the docs use.
- Skip(why): needs GPUs, Slurm or root, installs packages, or is the test suite itself.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_WORDS = ("janus", "python", "python3", "deepspeed", "torchrun", "sbatch", "srun", "make", "bash", "pip",
                 "tensorboard", "OMP_NUM_THREADS=1")
TRAIN_TINY = ("--set train.steps=2 --set checkpoint.every=2 --set train.eval_every=2 --set eval.every=0 "
              "--set data.valid_max_batches=1 --set logging.every=1")


@dataclass(frozen=True)
class Run:
    subs: tuple[tuple[str, str], ...] = ()  # (docs text, tiny replacement)
    append: str = ""  # extra flags at the end
    check: str = ""  # name of a function below that checks what the command wrote


@dataclass(frozen=True)
class Help:
    why: str


@dataclass(frozen=True)
class Skip:
    why: str


SHIPPED_TASKS = Run(subs=(("--out data/tasks", "--out shipped_tasks"),), check="shipped_tasks_rebuilt")
SLURM = Skip("needs a Slurm cluster and root; tests/test_slurm.py, test_slurm_training.py and "
             "test_slurm_multinode.py run it on a local one")
BENCH = Help("a benchmark (minutes to hours on CPU); bench/ scripts print their own measurements")
BENCH_SUITE = Help("a benchmark suite: needs the downloaded data and hours to weeks of GPU time (docs/benchmarks.md)")
BENCH_FIXTURES = Help("a measured fixture run of docs/benchmarks.md (1 to 45 minutes here); tests/test_benchmark_kinds.py "
                      "runs each kind on the fixtures at smaller sizes")

DOC_COMMANDS: dict[str, Run | Help | Skip] = {
    # README.md
    "make demo": Skip("sets up .venv and trains 80 steps on 2 ranks; the 2-rank launch below is the same run, shortened"),
    "make test": Skip("the test suite itself (what CI runs)"),
    "python -m pytest -m slow": Skip("the slow test suite itself"),
    "pip install torch": Skip("installs packages from PyPI"),
    'pip install --no-build-isolation -e ".[gpu]"': Skip("installs the CUDA kernel packages (GPU machine)"),
    'pip install -e ".[eval]"': Skip("installs packages from PyPI"),
    'pip install -e ".[wandb]"': Skip("installs packages from PyPI"),
    "pip install 'janus-pretrain[wandb]'": Skip("installs packages from PyPI"),
    "janus shard --genomes GENOMES.yaml --out runs/shards --window-bp 1048576": Help(
        "synopsis (the bundled genomes are shorter than 1 Mbp); docs/data.md's bundled form runs"),
    "janus pretrain --config configs/1m.yaml --dry-run --ranks 8": Run(check="dry_run_plan"),
    "janus pretrain --config configs/tiny.yaml --set parallel.ep_size=1": Run(append=TRAIN_TINY),
    "janus convert --checkpoint RUN/checkpoints --out EXPORT": Help("synopsis; the docs/downstream.md form runs"),
    "janus evaluate --model EXPORT --suite configs/eval/bundled.yaml --out runs/eval [--seeds 3]": Run(
        subs=(("EXPORT", "exports/demo"),), append="--seeds 1 --only dmel_splice --baselines ''",
        check="evaluation_results"),
    "janus make-tasks --fasta F --gtf G --out DIR": Help("synopsis; docs/evaluation.md's shipped-task commands run"),
    "janus memory --config configs/1m.yaml [--ranks N] [--cp N]": Run(),
    "janus memory --config C --ranks R --cp N": Help("synopsis; the README and docs/memory.md forms run"),
    "janus memory --config CFG": Help("synopsis"),
    "deepspeed --num_gpus 8 launch/pretrain.py --config configs/1m.yaml [--set key=value ...]": Skip("needs 8 GPUs"),
    "OMP_NUM_THREADS=1 deepspeed --num_accelerators 2 launch/pretrain.py --config configs/tiny.yaml": Help(
        "make demo's launch (2 ranks: a minute here even at 2 steps); the one-process form runs here, and "
        "tests/test_engine_real.py trains 2 ranks through launch/pretrain.py"),
    "sbatch launch/slurm_pretrain.sh configs/1m.yaml [--set ...]": SLURM,
    # docs/janusdna.md (and README's workflow table)
    "janus convert --from janusdna --checkpoint FILE.ckpt --out EXPORT": Help(
        "synopsis; tests/test_janusdna_official.py converts golden official checkpoints"),
    "janus convert --to janusdna --model EXPORT --out DIR": Help("synopsis; tests/test_janusdna_official.py runs it"),
    "janus convert --from janusdna": Help("named in prose"),
    "janus convert --to janusdna": Help("named in prose"),
    "janus convert --from janusdna --checkpoint JANUSDNA_RUN/checkpoints/last.ckpt --out exports/janusdna_72_midattn": Help(
        "needs the downloaded official weights; tests/test_janusdna_official.py converts golden official checkpoints"),
    "janus convert --to janusdna --model EXPORT --out JANUSDNA_RUN": Help(
        "synopsis; tests/test_janusdna_official.py writes and re-reads official checkpoints"),
    "janus pretrain --config configs/janusdna/w_midattn_72dim.yaml --set model.final_mlp=false "
    "--set checkpoint.init_from=exports/janusdna_72_midattn --dry-run": Help(
        "needs an imported official model; tests/test_janusdna_official.py continues pretraining one on 2 ranks"),
    "janus pretrain --dry-run": Help("named in prose"),
    # docs/training.md
    "janus pretrain --config CFG [--set key=value ...] [--resume auto|none|TAG] [--dry-run [--ranks N]]": Help(
        "synopsis"),
    "python launch/pretrain.py ...": Help("the same command as a script"),
    "python launch/pretrain.py": Help("the script launchers start"),
    "deepspeed --num_accelerators 2 launch/pretrain.py --config configs/tiny.yaml": Help(
        "the README's laptop launch, which runs, without its OMP_NUM_THREADS=1"),
    "torchrun --standalone --nproc_per_node 2 launch/pretrain.py ...": Help("synopsis of another launcher"),
    "deepspeed --num_gpus 8 launch/pretrain.py --config configs/1m.yaml": Skip("needs 8 GPUs"),
    "deepspeed --num_gpus 8 launch/pretrain.py --config configs/1k.yaml --set checkpoint.dir=runs/stage1/checkpoints "
    "--set logging.dir=runs/stage1/tensorboard": Skip("needs 8 GPUs"),
    "deepspeed --num_gpus 8 launch/pretrain.py --config configs/1k.yaml --set data.seq_len=16384 "
    "--set train.micro_batch=2 --set checkpoint.init_from=runs/stage1/checkpoints "
    "--set checkpoint.dir=runs/stage2/checkpoints --set logging.dir=runs/stage2/tensorboard": Skip("needs 8 GPUs"),
    "deepspeed launch/pretrain.py": Help("the launcher with its defaults"),
    "sbatch launch/slurm_pretrain.sh configs/1m.yaml": SLURM,
    "tensorboard --logdir runs/demo/tensorboard": Skip("starts a web server"),
    # docs/data.md
    "janus shard --genomes configs/genomes/bundled.yaml --out shards/bundled --window-bp 16384 [--stride-bp S] "
    "[--max-n-frac 0.5] [--min-window-bp 1024] [--shard-size-mb 256] [--workers 4] [--seed 0]": Run(),
    "python bench/shard_verify.py": BENCH,
    # docs/downstream.md
    "janus convert --checkpoint runs/demo/checkpoints --out exports/demo": Run(),
    "janus finetune --model exports/demo --train data/labels/splice_train.tsv [--valid data/labels/splice_valid.tsv] "
    "--test data/labels/splice_test.tsv --out runs/splice [--rc-conjoin] [--epochs 10] [--lr 3e-3] "
    "[--batch-size 32] [--patience 3] [--freeze-backbone]": Run(append="--max-steps 2", check="finetune_metrics"),
    "janus embed --model exports/demo --fasta in.fa --out emb.npz [--per-position] [--window-bp 1024]": Run(
        check="embeddings"),
    "janus score-variants --model exports/demo --fasta hg38.fa --variants in.vcf --out scores.tsv [--window-bp 1024] "
    "[--batch-size 8] [--on-ref-mismatch report|error]": Run(check="variant_scores"),
    "python bench/finetune_cost.py --model EXPORT": BENCH,
    "python -c \"from janus_pretrain.downstream.tsv import stratified_split; stratified_split("
    "'data/labels/splice_junctions.tsv', 'data/labels/splice', seed=0)\"": Run(
        subs=(("'data/labels/splice'", "'resplit/splice'"),), check="splice_split_rebuilt"),
    "python bench/finetune_splice.py": BENCH,
    "python bench/positive_control.py": BENCH,
    "python block 1 of docs/downstream.md": Run(check="python_example_output"),
    "python block 2 of docs/downstream.md": Run(),  # transformers with trust_remote_code on the demo export
    # docs/evaluation.md
    "janus make-tasks --fasta F --gtf G --out DIR [--prefix P] [--genomes configs/genomes/bundled.yaml --species S]":
        Help("synopsis; the shipped-task commands below run"),
    "janus evaluate --model EXPORT --suite configs/eval/bundled.yaml --out DIR [--seeds 3] [--baselines kmer,random]":
        Help("synopsis; the README form runs"),
    "janus evaluate --model EXPORT --suite configs/eval/zero_shot.yaml --out DIR --seeds 3":
        Help("the measured zero-shot run (3.4 min); the README form of evaluate runs"),
    "python data_prep/make_tasks.py --fasta data/genomes/dmel_chr4.fna.gz --gtf data/genomes/dmel_chr4.gtf.gz "
    "--out data/tasks --prefix dmel --tasks splice,region --genomes configs/genomes/bundled.yaml --species dmel":
        SHIPPED_TASKS,
    "python data_prep/make_tasks.py --fasta data/genomes/dmel_chr4.fna.gz --gtf data/genomes/dmel_chr4.gtf.gz "
    "--out data/tasks --prefix dmel --tasks promoter --test-fraction 0.3 --genomes configs/genomes/bundled.yaml "
    "--species dmel": SHIPPED_TASKS,
    "python data_prep/make_tasks.py --fasta data/genomes/scer_chrI.fna.gz --gtf data/genomes/scer_chrI.gtf.gz "
    "--out data/tasks --prefix scer --tasks promoter --test-fraction 0.3 --genomes configs/genomes/bundled.yaml "
    "--species scer": SHIPPED_TASKS,
    "python data_prep/make_tasks.py --fasta data/genomes/dmel_chr4.fna.gz --gtf data/genomes/dmel_chr4.gtf.gz "
    "--out data/tasks --prefix dmel --tasks codon_snv --genomes configs/genomes/bundled.yaml --species dmel":
        SHIPPED_TASKS,
    "python data_prep/make_tasks.py --fasta data/genomes/scer_chrI.fna.gz --gtf data/genomes/scer_chrI.gtf.gz "
    "--out data/tasks --prefix scer --tasks codon_snv --genomes configs/genomes/bundled.yaml --species scer":
        SHIPPED_TASKS,
    # docs/benchmarks.md (and docs/evaluation.md's row): the suites need the downloaded data; the fixture
    # runs take minutes to most of an hour (tests/test_benchmark_kinds.py runs each kind on the fixtures)
    "janus evaluate --model EXPORT --suite configs/eval/nt.yaml --out runs/bench/nt [--data-root DIR]": BENCH_SUITE,
    "janus evaluate --model EXPORT --suite configs/eval/gb.yaml --out runs/bench/gb [--data-root DIR]": BENCH_SUITE,
    "janus evaluate --model EXPORT --suite configs/eval/dnalongbench_eqtl.yaml --out runs/bench/eqtl [--data-root DIR]":
        BENCH_SUITE,
    "janus evaluate --model EXPORT --suite configs/eval/nt.yaml --out DIR [--data-root DIR]": BENCH_SUITE,
    "janus convert --from janusdna --checkpoint JANUSDNA_RUN/checkpoints/last.ckpt --out exports/janusdna_72_midattn "
    "--tokenizer janusdna_char": Help(
        "needs the downloaded official weights; tests/test_janusdna_official.py converts golden official checkpoints"),
    "janus evaluate --model exports/janusdna_72_midattn --suite configs/eval/nt.yaml "
    "--out runs/bench/nt_janusdna_72_midattn": BENCH_SUITE,
    "janus convert --from janusdna --checkpoint tests/fixtures/janusdna_official/w_midattn_tiny.ckpt "
    "--out runs/bench_fixtures/tiny": Help("the fixture import; tests/test_janusdna_official.py converts it"),
    "janus evaluate --model runs/bench_fixtures/tiny --suite configs/eval/nt.yaml --data-root tests/fixtures/benchmarks/nt "
    "--only H3,enhancers_types --out runs/bench_fixtures/nt --seeds 2 --grid 1e-3x8,2e-3x8 --epochs 2 --window-bp 200 "
    "--threads 1": BENCH_FIXTURES,
    "janus evaluate --model runs/bench_fixtures/tiny --suite configs/eval/gb.yaml "
    "--data-root tests/fixtures/benchmarks/gb_package --only human_nontata_promoters --out runs/bench_fixtures/gb "
    "--seeds 2 --grid 1e-3x8,2e-3x8 --epochs 2 --window-bp 200 --threads 1": BENCH_FIXTURES,
    "janus evaluate --model runs/bench_fixtures/tiny --suite tests/fixtures/benchmark_suites/toy_eqtl.yaml "
    "--out runs/bench_fixtures/eqtl --threads 1": BENCH_FIXTURES,
    "python bench/finetune_cost.py --config configs/1k.yaml --length 500 --batch-size 8 --steps 3 --n 0 "
    "--suite nt,gb,dnalongbench_eqtl": BENCH,
    # docs/fusion.md, docs/gpu.md, docs/memory.md, docs/objectives.md
    "python bench/fusion_throughput.py --threads 1 --clock process": BENCH,
    "bash bench/gpu/check.sh --dry-run": Skip("the GPU kit; its CPU dry run is tests/test_gpu_kit.py"),
    "bash bench/gpu/build_wheels.sh": Skip("downloads a CUDA torch and toolchain and compiles for two hours; "
                                          "tests/test_gpu_kit.py checks its sm_90 setup.py edit"),
    "bash bench/gpu/carry_size.sh": Run(),
    "make test-torch211": Skip("downloads torch 2.11.0 into its own venv (docs/gpu.md)"),
    "make setup": Skip("installs packages from PyPI (make test and make demo run it)"),
    "janus memory --config configs/1m.yaml [--set k=v ...] [--ranks 8] [--cp 8] [--device-gb 80] "
    "[--backend cuda|cuda-flex|torch-cuda|reference] [--seq-len N]": Run(),
    "python bench/memory_scaling.py --config configs/1m.yaml [--lengths 4096 8192 ...] [--checkpointing none layer]":
        BENCH,
    "python bench/memory_scaling.py --from-json docs/memory_cpu_measured.json": BENCH,
    "python bench/context_parallel.py --seq-len 8192": BENCH,
    "python bench/scan_throughput.py --memory --repeats 2": BENCH,
    "janus memory": Help("named in prose"),
    "janus shard": Help("named in prose"),
    "janus convert": Help("named in prose"),
    "janus pretrain": Help("named in prose"),
    "janus finetune": Help("named in prose"),
    "janus embed": Help("named in prose"),
    "janus score-variants": Help("named in prose"),
    "janus evaluate": Help("named in prose"),
    "janus make-tasks": Help("named in prose"),
    "python launch/convert_checkpoint.py": Help("named in prose"),
    "python launch/finetune.py": Help("named in prose"),
    "pip install -e .": Skip("installs the package (make does it)"),
    "python -m janus_pretrain <verb>": Help("janus without installing; every verb runs that way in this test"),
    "janus shard --genomes configs/genomes/bundled.yaml --out runs/objectives/shards --window-bp 4096": Run(),
    "python bench/objectives.py --steps 150 --evals 5 --valid-batches 2": BENCH,
    # docs/slurm.md
    "sbatch --nodes=4 --time=2-00:00:00 launch/slurm_pretrain.sh configs/1m.yaml": SLURM,
    "sbatch launch/slurm_pretrain.sh configs/1m.yaml --set train.steps=20000 "
    "--set checkpoint.dir=/scratch/me/run1/checkpoints": SLURM,
    "sbatch --ntasks-per-node=2 --cpus-per-task=1 --time=30 launch/slurm_pretrain.sh configs/tiny.yaml": SLURM,
    "python tests/slurm_cluster.py up /tmp/slurm": SLURM,
    "export SLURM_CONF=/tmp/slurm/slurm.conf": SLURM,
    "squeue; scontrol show job <id>": SLURM,
    "python tests/slurm_cluster.py down /tmp/slurm": SLURM,
    "srun --wait": SLURM,
    "sbatch --nodes=N --ntasks-per-node=G": SLURM,
    "sbatch --nodes=1 --ntasks-per-node=1 launch/slurm_pretrain.sh run.yaml --set parallel.ep_size=1": SLURM,
    "sbatch --nodes=2 --ntasks-per-node=1 ...": SLURM,
}

# made once, in this order, before anything else runs: the shards, the checkpoint, the export
PREREQUISITES = ("janus shard --genomes configs/genomes/bundled.yaml --out runs/objectives/shards --window-bp 4096",
                 "janus pretrain --config configs/tiny.yaml --set parallel.ep_size=1",
                 "janus convert --checkpoint runs/demo/checkpoints --out exports/demo")


# ----------------------------------------------------------------------------- extraction

def _is_command(text: str) -> bool:
    return " " in text and text.split(" ", 1)[0] in COMMAND_WORDS  # a program and at least one argument


def doc_commands() -> dict[str, list[str]]:
    """{command: [where it appears]} from README.md and docs/*.md (python fences keyed by position)."""
    found: dict[str, list[str]] = {}

    def add(command: str, where: str) -> None:
        found.setdefault(" ".join(command.split()), []).append(where)

    for path in DOCS:
        text, name = path.read_text(), path.relative_to(REPO).as_posix()
        python_blocks = 0
        for fence in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            line = text[:fence.start()].count("\n") + 1
            if fence.group(1) in ("bash", "sh", "shell", "console"):
                for command in fence.group(2).replace("\\\n", " ").splitlines():
                    command = re.sub(r"\s#.*$", "", command).strip()
                    if command and not command.startswith("#"):
                        add(command, f"{name}:{line}")
            elif fence.group(1) == "python":
                python_blocks += 1
                found[f"python block {python_blocks} of {name}"] = [f"{name}:{line}", fence.group(2)]
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M).replace("\\\n", " ")
        for indented in re.finditer(r"^ {4,}(\S.*)$", prose, re.M):
            if _is_command(indented.group(1)):
                add(re.sub(r"\s#.*$", "", indented.group(1)), name)
        for span in re.finditer(r"`([^`\n]+)`", prose):
            if _is_command(span.group(1)):
                add(span.group(1), name)
    return found


# ----------------------------------------------------------------------------- the sandbox

@dataclass
class Sandbox:
    root: Path
    env: dict
    results: dict = field(default_factory=dict)

    def run(self, key: str) -> subprocess.CompletedProcess:
        if key not in self.results:
            entry = DOC_COMMANDS[key]
            if key.startswith("python block"):
                script = self.root / "example.py"
                script.write_text(doc_commands()[key][1])
                command = "python example.py"
            else:
                command = re.sub(r" \[[^\[\]]*(\[[^\[\]]*\][^\[\]]*)*\]", "", key)  # drop optional [...] groups
                for old, new in entry.subs:
                    assert old in command, f"{key}: substitution {old!r} no longer applies"
                    command = command.replace(old, new)
                command = f"{command} {entry.append}".strip()
            self.results[key] = subprocess.run(["bash", "-c", command], cwd=self.root, env=self.env,
                                               capture_output=True, text=True, timeout=600)
        return self.results[key]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    root = tmp_path_factory.mktemp("docs_sandbox")
    shutil.copytree(REPO / "configs", root / "configs")  # relative YAML paths resolve inside the sandbox
    for name in ("data", "launch", "data_prep", "bench", "tests"):
        (root / name).symlink_to(REPO / name)
    bin_dir = root / "bin"  # `janus` as installed, and `python` = this interpreter (the console script
    bin_dir.mkdir()          # may not be installed in a fresh clone; python -m janus_pretrain is the same)
    for name, line in (("python", f'exec "{sys.executable}" "$@"'),
                       ("janus", f'exec "{sys.executable}" -m janus_pretrain "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])  # + deepspeed
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1", "JANUS_CACHE_DIR": str(root / "cache"),
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))}
    # inputs the downstream docs name: a small FASTA, a "reference" and variants on it
    (root / "in.fa").write_text(">seq1\n" + "ACGTTGCA" * 40 + "\n>seq2 soft-masked\nacgtNNACGGCT\n")
    reference = "".join("ACGT"[(i * 7 + i // 5) % 4] for i in range(600))
    (root / "hg38.fa").write_text(">chr1\n" + "\n".join(reference[i:i + 60] for i in range(0, 600, 60)) + "\n")
    alts = [[b for b in "ACGT" if b != reference[pos - 1]] for pos in (100, 300)]
    (root / "in.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
                                 f"chr1\t100\t.\t{reference[99]}\t{alts[0][0]},{alts[0][1]}\n"
                                 f"chr1\t300\t.\t{reference[299]}\t{alts[1][0]}\n")
    (root / "resplit").mkdir()  # where the split command's output goes instead of data/labels
    (root / "runs" / "demo").mkdir(parents=True)
    (root / "runs" / "demo" / "shards").symlink_to(root / "runs" / "objectives" / "shards")  # configs/tiny.yaml's data
    box = Sandbox(root, env)
    for key in PREREQUISITES:
        result = box.run(key)
        assert result.returncode == 0, f"{key}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return box


# ----------------------------------------------------------------------------- checks of outputs

def dry_run_plan(box: Sandbox, result) -> None:
    out = result.stdout
    assert "resolved config" in out and "layer map" in out and "activated per token" in out
    assert "x 8 ranks" in out and "predicted peak" in out and "data: NOT READY" in out  # runs/shards: not made here
    assert not (box.root / "runs" / "1m").exists()  # no checkpoint or run directory made


def evaluation_results(box: Sandbox, result) -> None:
    results = json.loads((box.root / "runs" / "eval" / "results.json").read_text())
    assert list(results["tasks"]) == ["dmel_splice"]


def finetune_metrics(box: Sandbox, result) -> None:
    metrics = json.loads((box.root / "runs" / "splice" / "metrics.json").read_text())
    assert metrics["history"][-1]["step"] == 2 and "test" in metrics


def embeddings(box: Sandbox, result) -> None:
    import numpy as np

    with np.load(box.root / "emb.npz") as data:
        assert list(data["names"]) == ["seq1", "seq2"] and list(data["lengths"]) == [320, 12]


def variant_scores(box: Sandbox, result) -> None:
    rows = (box.root / "scores.tsv").read_text().splitlines()
    assert len(rows) == 1 + 3 and all(row.endswith("\tok") for row in rows[1:])


def shipped_tasks_rebuilt(box: Sandbox, result) -> None:
    for made in sorted((box.root / "shipped_tasks").iterdir()):
        shipped = REPO / "data" / "tasks" / made.name
        if made.suffix == ".tsv":
            assert made.read_bytes() == shipped.read_bytes(), made.name
        else:  # the manifest records the command: only the output directory differs
            ours, theirs = json.loads(made.read_text()), json.loads(shipped.read_text())
            assert ours["command"].replace("shipped_tasks", "data/tasks") == theirs["command"]
            assert {**ours, "command": ""} == {**theirs, "command": ""}


def splice_split_rebuilt(box: Sandbox, result) -> None:
    for split in ("train", "valid", "test"):
        made = box.root / "resplit" / f"splice_{split}.tsv"
        assert made.read_bytes() == (REPO / "data" / "labels" / f"splice_{split}.tsv").read_bytes()


def python_example_output(box: Sandbox, result) -> None:
    bases = re.search(r"most likely bases: (\S+)", result.stdout).group(1)
    assert len(bases) == len("ACGTTGCAacgtNNACGGCTAGCTAGGATCCA") and set(bases) <= set("ACGT")


# ----------------------------------------------------------------------------- the tests

def test_every_docs_command_has_a_check():
    found = doc_commands()
    unchecked = {c: where for c, where in found.items() if c not in DOC_COMMANDS}
    assert not unchecked, f"docs commands without an entry in DOC_COMMANDS (add Run/Help/Skip): {unchecked}"
    stale = sorted(set(DOC_COMMANDS) - set(found))
    assert not stale, f"DOC_COMMANDS entries no longer in the docs (remove them): {stale}"


def _program_and_flags(command: str) -> tuple[list[str], list[str]]:
    words = command.split()
    script = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
    if script is not None:
        program, rest = ["python", words[script]], words[script + 1:]
    else:
        if words[:3] == ["python", "-m", "janus_pretrain"]:
            words = ["janus", *words[3:]]
        assert words[0] == "janus", command
        verb = [w for w in words[1:2] if not w.startswith("<")]
        program, rest = ["janus", *verb], words[1 + len(verb):]
    return program, [w.strip("[]").split("=")[0] for w in rest if w.strip("[").startswith("--")]


def _ids(kind) -> dict:
    keys = [k for k, v in DOC_COMMANDS.items() if isinstance(v, kind)]
    return {"argvalues": keys, "ids": [re.sub(r"[^\w.-]+", "_", k)[:80] for k in keys]}


@pytest.mark.parametrize("key", **_ids(Help))
def test_synopsis_flags_exist(key, sandbox):
    program, flags = _program_and_flags(key)
    result = subprocess.run(["bash", "-c", " ".join(program + ["--help"])], cwd=sandbox.root, env=sandbox.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    missing = [f for f in flags if not re.search(rf"{re.escape(f)}\b", result.stdout)]
    assert not missing, f"{key}: {' '.join(program)} --help does not list {missing}"


@pytest.mark.parametrize("key", **_ids(Run))
def test_docs_command_runs(key, sandbox):
    result = sandbox.run(key)
    assert result.returncode == 0, f"{key}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
    assert "\r" not in result.stderr, "a progress bar was drawn into a log (stderr is not a terminal)"
    check = DOC_COMMANDS[key].check
    if check:
        globals()[check](sandbox, result)


def test_gzip_input_of_the_embed_command(sandbox):
    """The docs say embed reads gzip FASTA: the same command on in.fa.gz writes the same file."""
    (sandbox.root / "in.fa.gz").write_bytes(gzip.compress((sandbox.root / "in.fa").read_bytes()))
    command = "janus embed --model exports/demo --fasta in.fa.gz --out emb_gz.npz"
    result = subprocess.run(["bash", "-c", command], cwd=sandbox.root, env=sandbox.env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import numpy as np

    sandbox.run(next(k for k in DOC_COMMANDS if k.startswith("janus embed")))
    with np.load(sandbox.root / "emb_gz.npz") as got, np.load(sandbox.root / "emb.npz") as want:
        np.testing.assert_array_equal(got["mean"], want["mean"])
