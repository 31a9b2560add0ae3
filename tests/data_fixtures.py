"""Data fixtures and helpers shared by the data tests (imported explicitly, not via conftest)."""
from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from janus_pretrain.compression import compression_of_bytes
from janus_pretrain.commands.shard import main as shard_main

REPO = Path(__file__).resolve().parents[1]
BUNDLED_YAML = REPO / "configs" / "genomes" / "bundled.yaml"
BUNDLED_WINDOW = 4096


def shard(genomes: Path, out: Path, window: int, *extra: str) -> int:
    """Run the sharding CLI in-process; returns its exit code."""
    return shard_main(["--genomes", str(genomes), "--out", str(out), "--window-bp", str(window), *extra])


def write_genomes_yaml(directory: Path, species: list[dict], name: str = "genomes.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump({"species": species}, sort_keys=False))
    return path


def write_fasta(path: Path, records: list[tuple[str, str]], width: int = 60, newline: str = "\n",
                compress: bool | None = None) -> Path:
    lines = []
    for name, seq in records:
        lines.append(f">{name} test record")
        lines.extend(seq[i:i + width] for i in range(0, len(seq), width))
    data = (newline.join(lines) + newline).encode()
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def read_genome(path: Path) -> dict[str, str]:
    """Contig name -> sequence of a (gzipped) FASTA, by the simplest possible parser."""
    raw = Path(path).read_bytes()
    text = (gzip.decompress(raw) if compression_of_bytes(raw) != "plain" else raw).decode().replace("\r", "")
    genome, name = {}, None
    for line in text.split("\n"):
        if line.startswith(">"):
            name = line[1:].split()[0]
            genome[name] = []
        elif line:
            genome[name].append(line)
    return {k: "".join(v) for k, v in genome.items()}


def shard_samples(path: str | Path) -> list[tuple[str, bytes, dict]]:
    """(key, dna, json) of every sample in a tar shard, read with tarfile (independent of the loader)."""
    members: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            members.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return [(k, v["dna"], json.loads(v["json"])) for k, v in members.items()]


def all_samples(manifest: dict, split: str | None = None) -> list[tuple[str, str, bytes, dict]]:
    """(split, key, dna, json) of every sample listed in a manifest read by read_manifest."""
    out = []
    for name in manifest["species_order"]:
        for sp, entry in manifest["species"][name]["splits"].items():
            if split in (None, sp):
                for shard_entry in entry["shards"]:
                    out.extend((sp, k, d, j) for k, d, j in shard_samples(shard_entry["path"]))
    return out


@pytest.fixture(scope="session")
def bundled_shards(tmp_path_factory) -> Path:
    """All bundled real genomes, 4 kbp windows, small shards (several per species)."""
    out = tmp_path_factory.mktemp("bundled") / "shards"
    assert shard(BUNDLED_YAML, out, BUNDLED_WINDOW, "--shard-size-mb", "0.05", "--workers", "2",
                 "--max-n-frac", "0.9") == 0  # keeps one dmel window that is 87% N
    return out


@pytest.fixture(scope="session")
def bundled_manifest(bundled_shards) -> dict:
    from janus_pretrain.data import read_manifest
    return read_manifest(bundled_shards)

