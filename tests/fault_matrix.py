"""The fault-injection table: every file the framework reads x every way it gets damaged -> the
outcome the user must see (tests/test_fault_injection.py runs it; docs/reliability.md's matrix is
render_markdown() of it, and a test keeps the two equal).

A row (FileKind) says how to build a good copy of the file (with whatever it needs beside it),
which reader a command calls on it and which exceptions that command turns into `error: ...` and
exit 2. A column (Damage) rewrites the good file in place. The expected outcome of a cell is
ERROR (the reader raises one of the row's errors, one line, naming the file) unless the row says
otherwise: RECOVERS (the documented fallback; the row's `recovered` check holds), READS (the
damaged file is still a valid file of its kind, e.g. a YAML cut after a complete line), or an
XFAIL reason (a fix owned by another issue).
"""
from __future__ import annotations

import gzip
import json
import random
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
COMPAT = REPO / "tests" / "fixtures" / "main_b7316c0"
OFFICIAL = REPO / "tests" / "fixtures" / "janusdna_official"
BENCHMARKS = REPO / "tests" / "fixtures" / "benchmarks"

ERROR, RECOVERS, READS = "one line", "recovers", "reads"
ERROR_TAG = "one line naming the tag"  # the damage is only seen across files (rebuilt vs saved weights)
NOT_APPLICABLE = "n/a"
ISSUE_27 = "xfail: issue 27"


# ---- damages: each rewrites the file at `path` (whose good bytes are `good`) ----

def _write(data: bytes) -> Callable[[Path, bytes], None]:
    return lambda path, good: path.write_bytes(data)


def _truncate(fraction: float) -> Callable[[Path, bytes], None]:
    return lambda path, good: path.write_bytes(good[:max(1, int(len(good) * fraction))] if fraction < 1
                                               else good[:-1])


def _garbage(path: Path, good: bytes) -> None:
    noise = random.Random(26).randbytes(max(64, min(len(good), 4096)))
    path.write_bytes(b"\xff\x00" + noise)  # starts with bytes UTF-8 never has


def _utf16(path: Path, good: bytes) -> None:
    path.write_bytes(good.decode("utf-8").encode("utf-16"))  # what Windows editors call "Unicode"


def _latin1(path: Path, good: bytes) -> None:
    """An accented letter added to the first line by an editor that saves Latin-1."""
    cut = good.find(b"\n")
    cut = len(good) if cut < 0 else cut
    path.write_bytes(good[:cut] + " café".encode("latin-1") + good[cut:])


def _flip(path: Path, good: bytes) -> None:
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF  # in text: a byte >= 0x80 where ASCII was, never valid UTF-8 alone
    path.write_bytes(bytes(data))


def _directory(path: Path, good: bytes) -> None:
    path.unlink()
    path.mkdir()


def _dangling(path: Path, good: bytes) -> None:
    path.unlink()
    path.symlink_to(path.with_name(path.name + ".gone"))


def _unreadable(path: Path, good: bytes) -> None:
    path.chmod(0)


@dataclass(frozen=True)
class Damage:
    name: str  # column heading
    apply: Callable[[Path, bytes], None]
    text_only: bool = False  # an encoding: only for text files
    needs_non_root: bool = False  # root reads any file whatever its mode


DAMAGES = [
    Damage("empty", _write(b"")),
    Damage("cut at 1 byte", _truncate(0.0)),
    Damage("cut at half", _truncate(0.5)),
    Damage("last byte cut", _truncate(1.0)),
    Damage("binary garbage", _garbage),
    Damage("UTF-16", _utf16, text_only=True),
    Damage("Latin-1", _latin1, text_only=True),
    Damage("flipped byte", _flip),
    Damage("directory", _directory),
    Damage("dangling symlink", _dangling),
    Damage("no read permission (not as root)", _unreadable, needs_non_root=True),
    Damage("wrong top-level type", lambda path, good: None),  # replaced by the row's own
]
DAMAGE = {d.name: d for d in DAMAGES}
WRONG_TYPE = "wrong top-level type"


# ---- rows: the files, how to make a good one, who reads it ----

@dataclass(frozen=True)
class FileKind:
    name: str  # row heading
    target: str  # the damaged file, relative to the bundle directory
    build: Callable[[Path], None]  # writes a good bundle into an empty directory
    read: Callable[[Path], object]  # the command's reader, given the bundle directory
    errors: Callable[[], tuple[type, ...]]  # what the command reports as `error:` + exit 2 (imported late)
    command: str  # what a user runs on it (doc column)
    text: bool = True
    wrong_type: Callable[[Path], None] | None = None  # valid syntax, wrong shape; None: not applicable
    outcomes: dict[str, str] = field(default_factory=dict)  # damage -> outcome other than ERROR
    recovered: Callable[[Path, object], None] | None = None  # checks a RECOVERS cell's result

    def outcome(self, damage: Damage) -> str:
        if (damage.text_only and not self.text) or (damage.name == WRONG_TYPE and self.wrong_type is None):
            return NOT_APPLICABLE
        return self.outcomes.get(damage.name, ERROR)


def _copy(source: Path, name: str | None = None) -> Callable[[Path], None]:
    def build(bundle: Path) -> None:
        shutil.copy(source, bundle / (name or source.name))
    return build


def _text(name: str, text: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / name).write_text(text)


def _yaml_list(name: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / name).write_text("- model\n- data\n")


def _json_list(name: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / name).write_text("[1, 2]\n")


def _torch_list(name: str) -> Callable[[Path], None]:
    def write(bundle: Path) -> None:
        import torch
        torch.save([1, 2], bundle / name)
    return write


SMALL_FASTA = "".join(f">chr{i} test contig\n" + "\n".join(
    "".join(random.Random(i).choice("ACGTacgt") for _ in range(60)) for _ in range(40)) + "\n" for i in (1, 2))


def _genomes(bundle: Path) -> None:
    (bundle / "genome.fa").write_text(SMALL_FASTA)
    (bundle / "genomes.yaml").write_text("# two contigs\nspecies:\n  - name: toy\n    fasta: genome.fa\n"
                                         "    weight: 1.0\n    valid_fraction: 0.1\n    test_fraction: 0.1\n")


def _shards(bundle: Path) -> None:
    from janus_pretrain.commands.shard import main as shard_main

    _genomes(bundle)
    code = shard_main(["--genomes", str(bundle / "genomes.yaml"), "--out", str(bundle / "shards"),
                       "--window-bp", "512"])
    assert code == 0, "sharding the good genome failed"


def _first_shard(bundle: Path) -> str:
    manifest = json.loads((bundle / "shards" / "manifest.json").read_text())
    return manifest["species"]["toy"]["splits"]["train"]["shards"][0]["path"]


def _read_shard(bundle: Path):
    from janus_pretrain.data.manifest import read_manifest
    from janus_pretrain.data.shard_integrity import ShardReader

    shards = read_manifest(bundle / "shards")["species"]["toy"]["splits"]["train"]["shards"]
    return list(ShardReader(verify=True).windows(shards))


def _tar_of_other_things(bundle: Path) -> None:
    path = bundle / "shards" / _SHARD
    (bundle / "note.txt").write_text("not a sample\n")
    with tarfile.open(path, "w") as tar:
        tar.add(bundle / "note.txt", arcname="note.txt")


_SHARD = "train/toy-000000.tar"  # the first train shard's name (checked against the manifest by a test)


def _checkpoint(bundle: Path) -> None:
    shutil.copytree(COMPAT / "checkpoints", bundle / "checkpoints")


def _export(bundle: Path) -> None:
    """An export (and a FASTA), what every downstream command reads besides its own input."""
    shutil.copytree(COMPAT / "export", bundle / "export")
    (bundle / "genome.fa").write_text(SMALL_FASTA)


def _with_export(build: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(bundle: Path) -> None:
        _export(bundle)
        build(bundle)
    return both


def _suite(bundle: Path) -> None:
    text = (REPO / "configs" / "eval" / "bundled.yaml").read_text()
    (bundle / "suite.yaml").write_text(text.replace("../../data/", f"{REPO}/data/"))


def _tsv(bundle: Path) -> None:
    lines = (REPO / "data" / "labels" / "splice_valid.tsv").read_text().splitlines()[:40]
    (bundle / "table.tsv").write_text("\n".join(lines) + "\n")


def _csv(bundle: Path) -> None:
    lines = (REPO / "data" / "labels" / "splice_valid.tsv").read_text().splitlines()[:40]
    (bundle / "table.csv").write_text("\n".join(line.replace("\t", ",") for line in lines) + "\n")


VCF = ("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=2400>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
       + "".join(f"chr1\t{pos}\t.\tA\tG\t.\tPASS\tlabel={pos % 2}\n" for pos in range(10, 400, 13)))


def _gz_fasta(bundle: Path) -> None:
    (bundle / "genome.fa.gz").write_bytes(gzip.compress(SMALL_FASTA.encode(), mtime=0))


def _scan(name: str):
    def read(bundle: Path):
        from janus_pretrain.data.fasta_cache import scan_fasta
        return scan_fasta(bundle / name, bundle / "cache", "toy")
    return read


def _latest_recovered(bundle: Path, result) -> None:
    assert result == "step_00000003", f"expected the fallback to the newest complete step, got {result!r}"


def _errors(*names: str) -> Callable[[], tuple[type, ...]]:
    """'module:Class' names, imported when a test asks (the table itself imports no package code)."""
    def load() -> tuple[type, ...]:
        import importlib
        return tuple(getattr(importlib.import_module(m), c) for m, c in (n.split(":") for n in names))
    return load


def _load_config(bundle: Path):
    from janus_pretrain.config import load_config
    return load_config(bundle / "run.yaml")


def _read_genomes(bundle: Path):
    from janus_pretrain.data.genomes import read_genomes
    return read_genomes(bundle / "genomes.yaml")


def _load_suite(bundle: Path):
    from janus_pretrain.evaluation.registry import load_suite
    return load_suite(bundle / "suite.yaml")


def _read_manifest(bundle: Path):
    from janus_pretrain.data.manifest import read_manifest
    return read_manifest(bundle / "shards" / "manifest.json")


def _latest(bundle: Path):
    from janus_pretrain.checkpoint.layout import CheckpointDir
    return CheckpointDir(bundle / "checkpoints").latest()


def _convert(bundle: Path):
    from janus_pretrain.checkpoint.convert import convert_checkpoint
    return convert_checkpoint(bundle / "checkpoints")


def _convert_unverified(bundle: Path):  # janus convert --no-verify: the loaders alone must see the damage
    from janus_pretrain.checkpoint.convert import convert_checkpoint
    return convert_checkpoint(bundle / "checkpoints", verify=False)


def _load_export(bundle: Path):
    from janus_pretrain.export import load_pretrained
    return load_pretrained(bundle / "export")


def _load_export_unverified(bundle: Path):  # load_pretrained(verify=False): safetensors' own checks
    from janus_pretrain.export import load_pretrained
    return load_pretrained(bundle / "export", verify=False)


def _read_table(name: str, sequence_column: str = "sequence"):
    def read(bundle: Path):
        from janus_pretrain.evaluation.readers import read_table
        return read_table(bundle / name, sequence_column=sequence_column)
    return read


def _read_variants(bundle: Path):
    from janus_pretrain.downstream.variants import read_variants
    return read_variants(bundle / "variants.vcf")


def _open_fasta(bundle: Path):
    from janus_pretrain.downstream.indexed_fasta import open_fasta
    return dict(open_fasta(bundle / "genome.fa").items())


def _read_official(bundle: Path):
    from janus_pretrain.official.lightning_file import read_official_checkpoint
    return read_official_checkpoint(bundle / "official.ckpt")


def _gtf(bundle: Path) -> None:
    with gzip.open(REPO / "data" / "genomes" / "scer_chrI.gtf.gz", "rt") as handle:
        lines = [line for _, line in zip(range(60), handle)]
    (bundle / "annotation.gtf").write_text("".join(lines))


def _read_gtf(bundle: Path):
    from janus_pretrain.evaluation.annotation import read_gtf
    return read_gtf(bundle / "annotation.gtf")


EQTL = BENCHMARKS / "eqtl"


def _eqtl(bundle: Path) -> None:
    shutil.copytree(EQTL, bundle / "eqtl")


def _read_eqtl_config(bundle: Path):
    from janus_pretrain.evaluation.benchmarks.eqtl_files import read_eqtl_config
    return read_eqtl_config(bundle / "eqtl" / "config" / "gtex_hg38.Toy_Tissue.config", root=bundle / "eqtl")


def _read_eqtl_records(bundle: Path):
    from janus_pretrain.evaluation.benchmarks.eqtl_files import read_eqtl_records
    return read_eqtl_records(bundle / "eqtl" / "targets" / "Toy_Tissue.data.tsv")


NT_FASTA = "".join(f">seq{i}|{i % 2}\n" + "".join(random.Random(i).choice("ACGT") for _ in range(80)) + "\n"
                   for i in range(12))


def _read_nt_fasta(bundle: Path):
    from janus_pretrain.evaluation.benchmarks.nt import read_nt_fasta
    return read_nt_fasta(bundle / "nt.fasta", classes=2)


GB_PARQUET = BENCHMARKS / "gb" / "human_nontata_promoters" / "data" / "train-00000-of-00001.parquet"


def _read_gb_parquet(bundle: Path):
    from janus_pretrain.evaluation.benchmarks.genomic_benchmarks import read_gb_parquet
    return read_gb_parquet(bundle / "gb.parquet", classes=2)


CONVERT_ERRORS = _errors("janus_pretrain.checkpoint.convert:ConvertError", "janus_pretrain.config:ConfigError",
                         "janus_pretrain.export:ExportError")
EXPORT_ERRORS = _errors("janus_pretrain.export:ExportError")
TABLE_ERRORS = _errors("janus_pretrain.downstream.tsv:TableError")
STEP = "checkpoints/step_00000003/"
LATEST_FALLS_BACK = {d.name: RECOVERS for d in DAMAGES}
SHORTER_TEXT = {"cut at half": READS, "last byte cut": READS}  # cut at a line end: a valid, shorter file
NO_FINAL_NEWLINE = {"last byte cut": READS}  # the cut took only the final newline
UNCHECKED_BYTES = {"flipped byte": READS}  # --no-verify / verify=False: nothing compares the bytes

KINDS = [
    FileKind("run YAML", "run.yaml", _copy(REPO / "configs" / "tiny.yaml", "run.yaml"), _load_config,
             _errors("janus_pretrain.config:ConfigError"), "janus pretrain --config",
             wrong_type=_yaml_list("run.yaml"), outcomes=SHORTER_TEXT),
    FileKind("genomes YAML", "genomes.yaml", _genomes, _read_genomes,
             _errors("janus_pretrain.data.genomes:DataPrepError"), "janus shard --genomes",
             wrong_type=_yaml_list("genomes.yaml"), outcomes=SHORTER_TEXT),
    FileKind("suite YAML", "suite.yaml", _with_export(_suite), _load_suite,
             _errors("janus_pretrain.config_schema:ConfigError"), "janus evaluate --suite",
             wrong_type=_yaml_list("suite.yaml"), outcomes=NO_FINAL_NEWLINE),
    FileKind("FASTA", "genome.fa", _text("genome.fa", SMALL_FASTA), _scan("genome.fa"),
             _errors("janus_pretrain.data.genomes:DataPrepError"), "janus shard (genomes' fasta)",
             wrong_type=_text("genome.fa", "@read1\nACGT\n+\nIIII\n"), outcomes={**SHORTER_TEXT, "Latin-1": READS}),
    FileKind("FASTA, gzip", "genome.fa.gz", _gz_fasta, _scan("genome.fa.gz"),
             _errors("janus_pretrain.data.genomes:DataPrepError"), "janus shard (genomes' fasta)", text=False),
    FileKind("FASTA, bgzip", "scer_chrI.fna.gz", _copy(REPO / "data" / "genomes" / "scer_chrI.fna.gz"),
             _scan("scer_chrI.fna.gz"), _errors("janus_pretrain.data.genomes:DataPrepError"),
             "janus shard (genomes' fasta)", text=False),
    FileKind("FASTA, indexed", "genome.fa", _text("genome.fa", SMALL_FASTA), _open_fasta,
             _errors("janus_pretrain.downstream.indexed_fasta:FastaError"), "janus score-variants --fasta",
             wrong_type=_text("genome.fa", "@read1\nACGT\n+\nIIII\n"), outcomes=SHORTER_TEXT),
    FileKind("manifest.json", "shards/manifest.json", _shards, _read_manifest,
             _errors("janus_pretrain.data.manifest:ManifestError"), "janus pretrain (data.manifest)",
             wrong_type=_json_list("shards/manifest.json"), outcomes=NO_FINAL_NEWLINE),
    FileKind("shard tar", "shards/" + _SHARD, _shards, _read_shard,
             _errors("janus_pretrain.data.manifest:ManifestError"), "janus pretrain (data.manifest)",
             text=False, wrong_type=_tar_of_other_things),
    FileKind("checkpoint latest", "checkpoints/latest", _checkpoint, _latest, CONVERT_ERRORS,
             "janus pretrain (resume: auto), janus convert", outcomes=LATEST_FALLS_BACK,
             wrong_type=_text("checkpoints/latest", "step_99999999\n"), recovered=_latest_recovered),
    FileKind("meta.json", STEP + "meta.json", _checkpoint, _convert, CONVERT_ERRORS, "janus convert --checkpoint",
             wrong_type=_json_list(STEP + "meta.json")),
    FileKind("rank file", STEP + "rank_0.pt", _checkpoint, _convert, CONVERT_ERRORS, "janus convert --checkpoint",
             text=False, wrong_type=_torch_list(STEP + "rank_0.pt")),
    FileKind("expert file", STEP + "experts_ep1.pt", _checkpoint, _convert, CONVERT_ERRORS,
             "janus convert --checkpoint", text=False, wrong_type=_torch_list(STEP + "experts_ep1.pt")),
    FileKind("DeepSpeed model states", STEP + "mp_rank_00_model_states.pt", _checkpoint, _convert, CONVERT_ERRORS,
             "janus convert --checkpoint", text=False, wrong_type=_torch_list(STEP + "mp_rank_00_model_states.pt")),
    FileKind("ZeRO partition", STEP + "zero_pp_rank_1_mp_rank_00_optim_states.pt", _checkpoint, _convert,
             CONVERT_ERRORS, "janus convert --checkpoint", text=False,
             wrong_type=_torch_list(STEP + "zero_pp_rank_1_mp_rank_00_optim_states.pt")),
    FileKind("rank file, --no-verify", STEP + "rank_0.pt", _checkpoint, _convert_unverified, CONVERT_ERRORS, "janus convert --no-verify",
             text=False, wrong_type=_torch_list(STEP + "rank_0.pt"), outcomes=UNCHECKED_BYTES),
    FileKind("expert file, --no-verify", STEP + "experts_ep1.pt", _checkpoint, _convert_unverified, CONVERT_ERRORS,
             "janus convert --no-verify", text=False, wrong_type=_torch_list(STEP + "experts_ep1.pt"), outcomes={"flipped byte": ERROR_TAG}),
    FileKind("DeepSpeed model states, --no-verify", STEP + "mp_rank_00_model_states.pt", _checkpoint, _convert_unverified, CONVERT_ERRORS,
             "janus convert --no-verify", text=False, wrong_type=_torch_list(STEP + "mp_rank_00_model_states.pt"), outcomes=UNCHECKED_BYTES),
    FileKind("ZeRO partition, --no-verify", STEP + "zero_pp_rank_1_mp_rank_00_optim_states.pt", _checkpoint, _convert_unverified,
             CONVERT_ERRORS, "janus convert --no-verify", text=False,
             wrong_type=_torch_list(STEP + "zero_pp_rank_1_mp_rank_00_optim_states.pt"), outcomes=UNCHECKED_BYTES),
    FileKind("export config.json", "export/config.json", _export, _load_export, EXPORT_ERRORS,
             "janus embed/finetune/score-variants/evaluate --model", wrong_type=_json_list("export/config.json"), outcomes=NO_FINAL_NEWLINE),
    FileKind("export safetensors", "export/model.safetensors", _export, _load_export, EXPORT_ERRORS,
             "janus embed/finetune/score-variants/evaluate --model", text=False),
    FileKind("export safetensors, verify=False", "export/model.safetensors", _export, _load_export_unverified,
             EXPORT_ERRORS, "load_pretrained(verify=False)", text=False, outcomes=UNCHECKED_BYTES),
    FileKind("task TSV", "table.tsv", _with_export(_tsv), _read_table("table.tsv"), TABLE_ERRORS, "janus finetune --train",
             wrong_type=_text("table.tsv", "x\n1\n"), outcomes=NO_FINAL_NEWLINE),
    FileKind("task CSV", "table.csv", _csv, _read_table("table.csv"), TABLE_ERRORS, "janus evaluate (csv task)",
             wrong_type=_text("table.csv", "x\n1\n"), outcomes=NO_FINAL_NEWLINE),
    FileKind("task Parquet", "table.parquet",
             _copy(REPO / "tests/fixtures/benchmarks/gb/human_nontata_promoters/data/test-00000-of-00001.parquet",
                   "table.parquet"), _read_table("table.parquet", "seq"), TABLE_ERRORS, "janus evaluate (parquet task)",
             text=False, outcomes=UNCHECKED_BYTES),
    FileKind("VCF", "variants.vcf", _with_export(_text("variants.vcf", VCF)), _read_variants,
             _errors("janus_pretrain.downstream.variants:VariantError"), "janus score-variants --variants",
             wrong_type=_text("variants.vcf", "##fileformat=VCFv4.2\nchr1\t10\n"), outcomes={**SHORTER_TEXT, "empty": ERROR, "cut at 1 byte": ERROR}),
    FileKind("GTF", "annotation.gtf", _gtf, _read_gtf, _errors("janus_pretrain.evaluation.annotation:AnnotationError"),
             "janus evaluate (annotation tasks), data_prep/make_tasks.py --gtf",
             wrong_type=_text("annotation.gtf", "chrI\tRefSeq\texon\n")),
    FileKind("eQTL config", "eqtl/config/gtex_hg38.Toy_Tissue.config", _eqtl, _read_eqtl_config, TABLE_ERRORS,
             "janus evaluate (dnalongbench_eqtl suite)",
             wrong_type=_text("eqtl/config/gtex_hg38.Toy_Tissue.config", "genome_fa seqs/genome.fa\n"),
             outcomes=NO_FINAL_NEWLINE),
    FileKind("eQTL table", "eqtl/targets/Toy_Tissue.data.tsv", _eqtl, _read_eqtl_records, TABLE_ERRORS,
             "janus evaluate (dnalongbench_eqtl suite)",
             wrong_type=_text("eqtl/targets/Toy_Tissue.data.tsv", "sequence\tlabel\nACGT\t1\n"),
             outcomes=NO_FINAL_NEWLINE),
    FileKind("NT FASTA", "nt.fasta", _text("nt.fasta", NT_FASTA), _read_nt_fasta, TABLE_ERRORS,
             "janus evaluate (nt suite)", wrong_type=_text("nt.fasta", "ACGTACGT\n"),
             outcomes=NO_FINAL_NEWLINE),
    FileKind("Genomic Benchmarks Parquet", "gb.parquet", _copy(GB_PARQUET, "gb.parquet"), _read_gb_parquet,
             TABLE_ERRORS, "janus evaluate (gb suite)", text=False, wrong_type=_json_list("gb.parquet"),
             outcomes=UNCHECKED_BYTES),
    FileKind("official Lightning checkpoint", "official.ckpt", _copy(OFFICIAL / "w_midattn_tiny.ckpt", "official.ckpt"),
             _read_official, _errors("janus_pretrain.official.lightning_file:OfficialCheckpointError"),
             "janus convert --from janusdna", text=False, wrong_type=_torch_list("official.ckpt")),
]


KIND = {k.name: k for k in KINDS}


@dataclass(frozen=True)
class CommandCase:
    """The real command on one damaged file, in a subprocess: what a user sees."""
    command: str  # as the doc names it
    kind: str  # the FileKind whose good bundle it runs in
    damage: str
    args: tuple[str, ...]  # after `python`; {b} is the bundle directory
    code: int = 2  # 2: one `error:` line and nothing written; 0: the documented recovery
    wrote: str = ""  # with code 0: the file the command must have written, relative to the bundle


JANUS = ("-m", "janus_pretrain")
COMMAND_CASES = [
    CommandCase("launch/pretrain.py", "run YAML", "binary garbage", ("launch/pretrain.py", "--config", "{b}/run.yaml")),
    CommandCase("janus shard", "genomes YAML", "UTF-16", (*JANUS, "shard", "--genomes", "{b}/genomes.yaml", "--out", "{b}/out",
                                           "--window-bp", "512")),
    CommandCase("janus convert", "checkpoint latest", "binary garbage",
                (*JANUS, "convert", "--checkpoint", "{b}/checkpoints", "--out", "{b}/out"), code=0,
                wrote="out/model.safetensors"),
    CommandCase("janus convert --from janusdna", "official Lightning checkpoint", "flipped byte",
                (*JANUS, "convert", "--from", "janusdna", "--checkpoint", "{b}/official.ckpt", "--out", "{b}/out")),
    CommandCase("janus embed", "export config.json", "wrong top-level type",
                (*JANUS, "embed", "--model", "{b}/export", "--fasta", "{b}/genome.fa", "--out", "{b}/out.npz")),
    CommandCase("janus score-variants", "VCF", "UTF-16", (*JANUS, "score-variants", "--model", "{b}/export", "--fasta", "{b}/genome.fa",
                                  "--variants", "{b}/variants.vcf", "--out", "{b}/out.tsv")),
    CommandCase("janus finetune", "task TSV", "binary garbage", (*JANUS, "finetune", "--model", "{b}/export", "--train", "{b}/table.tsv",
                                               "--valid", "{b}/table.tsv", "--out", "{b}/out")),
    CommandCase("janus evaluate", "suite YAML", "Latin-1", (*JANUS, "evaluate", "--model", "{b}/export", "--suite", "{b}/suite.yaml",
                                          "--out", "{b}/out")),
]


@dataclass(frozen=True)
class RankCase:
    """launch/pretrain.py on 2 CPU ranks (gloo) resuming a damaged checkpoint of the compatibility
    fixture (2 ranks, ep_size 2) on the shards of the "shard tar" row."""
    name: str  # what it shows (doc column)
    launcher: str  # "deepspeed" (its launcher) or "srun" (one process per rank, srun's variables)
    damaged: str  # relative to the run directory
    damage: str  # a DAMAGES name
    error: str  # what the one `error:` line says
    named: str  # what the output must name: the damaged file, or the tag a recovery fell back to
    ep_size: int = 1  # the run's; 1 is another layout than the checkpoint's (a resharding resume)
    meta: dict = field(default_factory=dict)  # meta.json keys set before the damage (meta.json has no digest)
    checkpoint: dict = field(default_factory=dict)  # the run's checkpoint section


def write_rank_run(case: RankCase, shards: Path, run: Path) -> Path:
    """The run directory of `case` (checkpoints, run.yaml), its file damaged; returns run.yaml."""
    import yaml

    from compat_fixtures import MODEL

    shutil.copytree(COMPAT / "checkpoints", run / "checkpoints")
    meta_path = run / "checkpoints" / "step_00000003" / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), **case.meta}, indent=2))
    path = run / case.damaged
    DAMAGE[case.damage].apply(path, path.read_bytes())
    config = {"model": dict(MODEL), "data": {"manifest": str(shards / "manifest.json"), "seq_len": 32, "num_workers": 0},
              "train": {"micro_batch": 2, "steps": 4, "precision": "fp32", "seed": 3},
              "parallel": {"zero_stage": 2, "ep_size": case.ep_size},
              "checkpoint": {"dir": str(run / "checkpoints"), "every": 0, **case.checkpoint},
              "logging": {"dir": str(run / "tensorboard"), "every": 1}}
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run / "run.yaml"


RANK_CASES = [
    # the two faults issue 26 names, together: a binary `latest` (both ranks read it) falls back to
    # the newest complete step, whose 1-slot data stream 2 ranks cannot share: one line, and the
    # deepspeed launcher adds no traceback after it
    RankCase("binary latest, then a 1-slot data stream resumed onto 2 ranks", "deepspeed", "checkpoints/latest",
             "binary garbage", "its data stream has 1 slots", "step_00000003", meta={"data_streams": 1}),
    # only rank 1 reads rank_1.pt (same layout); checkpoint.verify off, so no digest sees it first
    RankCase("rank 1's own rank file replaced by garbage, checkpoint.verify: false", "srun",
             "checkpoints/step_00000003/rank_1.pt", "binary garbage", "no checkpoint in", "rank_1.pt", ep_size=2,
             checkpoint={"verify": False}),
]


def cells() -> list[tuple[FileKind, Damage]]:
    return [(kind, damage) for kind in KINDS for damage in DAMAGES]


def damage_file(kind: FileKind, damage: Damage, bundle: Path) -> Path:
    """Apply `damage` to the bundle's target file; returns its path."""
    path = bundle / kind.target
    if damage.name == WRONG_TYPE:
        kind.wrong_type(bundle)
    else:
        damage.apply(path, path.read_bytes())
    return path


def render_markdown() -> str:
    """The matrix as docs/reliability.md shows it (between its fault-matrix markers): the table of
    in-process cells, then the commands run on a damaged file."""
    lines = ["| file | read by | " + " | ".join(d.name for d in DAMAGES) + " |",
             "|" + " --- |" * (len(DAMAGES) + 2)]
    lines += [f"| {kind.name} | {kind.command} | " + " | ".join(kind.outcome(d) for d in DAMAGES) + " |"
              for kind in KINDS]
    lines += ["", "| command (a subprocess) | on | damage | exit | then |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {case.command} | {case.kind} | {case.damage} | {case.code} | "
              + ("one `error:` line naming the file, no traceback, nothing written" if case.code == 2 else
                 f"the recovery: {case.wrote.split('/')[-1]} written, no traceback") + " |"
              for case in COMMAND_CASES]
    lines += [f"| launch/pretrain.py, 2 ranks ({case.launcher}) | {case.name} | {case.damage} | 2 | one `error:` "
              f"line ({case.error} ...) from rank 0, the other rank silent, no traceback of a rank or the launcher, "
              f"checkpoint untouched |" for case in RANK_CASES]
    return "\n".join(lines) + "\n"
