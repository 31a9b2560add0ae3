"""Damaged shards never lose samples silently: digests, per-shard counts, checked samples, on_corrupt."""
from __future__ import annotations

import json
import logging
import shutil
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from data_fixtures import bundled_manifest, bundled_shards  # noqa: F401
from janus_pretrain.config import DataConfig
from janus_pretrain.data import ManifestError, TrainStream, read_manifest, validation_batches
from janus_pretrain.data import shard_integrity
from janus_pretrain.data.shard_integrity import ShardError, ShardReader


@pytest.fixture
def shards(bundled_shards, tmp_path) -> Path:
    """A private copy of the bundled shards to damage."""
    return Path(shutil.copytree(bundled_shards, tmp_path / "shards"))


def lambda_config(root: Path, **overrides) -> DataConfig:
    """lambda alone: one train shard of 10 windows; one crop per window, in order, 2 per batch."""
    values = dict(manifest=str(root / "manifest.json"), seq_len=1024, shuffle_buffer=0, crops_per_window=1,
                  num_workers=0, mixture={"lambda": 1.0})
    values.update(overrides)
    return DataConfig(**values)


def sample_starts(path: Path) -> list[tuple[str, int]]:
    """(key, offset of its first tar header) of every sample of a shard, in order."""
    starts: dict[str, int] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            starts.setdefault(member.name.split(".", 1)[0], member.offset)
    return list(starts.items())


def dna_offset(path: Path, index: int) -> int:
    """File offset of the bases of the index-th sample."""
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".dna")]
    return members[index].offset_data


def take(stream, n: int) -> list[dict]:
    return [next(stream) for _ in range(n)]


LAMBDA = Path("train") / "lambda-000000.tar"


@pytest.mark.parametrize("verify, expected", [(True, "bytes, the manifest says"),
                                              (False, "6 samples, the manifest lists 10")])
def test_shard_truncated_at_a_sample_boundary_is_an_error_naming_the_shard(shards, verify, expected):
    path = shards / LAMBDA
    keys = sample_starts(path)
    with open(path, "r+b") as handle:  # tarfile itself reads the cut file as a shorter, valid archive
        handle.truncate(keys[6][1])
    stream = TrainStream(lambda_config(shards, verify_shards=verify), micro_batch=2)
    with pytest.raises(ShardError) as error:
        take(stream, 10)
    message = str(error.value)
    assert str(path) in message and expected in message and "\n" not in message
    assert verify or f"after sample key {keys[5][0]}" in message


def test_bad_tar_header_is_an_error_naming_the_shard_and_the_last_good_sample(shards):
    path = shards / LAMBDA
    keys = sample_starts(path)
    data = bytearray(path.read_bytes())
    data[keys[3][1]:keys[3][1] + 16] = b"\xff" * 16  # the member name: the header checksum no longer holds
    path.write_bytes(bytes(data))
    reader = ShardReader(verify=False)
    entry = read_manifest(shards)["species"]["lambda"]["splits"]["train"]["shards"][0]
    with pytest.raises(ShardError, match=rf"lambda-000000.tar: 3 samples, the manifest lists 10.*{keys[2][0]}"):
        list(reader.windows([entry]))


def test_digest_mismatch_is_an_error_and_verification_off_hashes_nothing(shards, monkeypatch):
    path = shards / LAMBDA
    data = bytearray(path.read_bytes())
    offset = dna_offset(path, 4)
    data[offset] = ord("C") if data[offset] != ord("C") else ord("A")  # still a valid base: only the digest sees it
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"lambda-000000.tar: sha256 differs from the manifest's"):
        next(TrainStream(lambda_config(shards), micro_batch=2))
    calls = []
    monkeypatch.setattr(shard_integrity, "file_digest", lambda p: calls.append(p) or "0" * 64)
    off = TrainStream(lambda_config(shards, verify_shards=False), micro_batch=2)
    take(off, 10)  # two epochs of the damaged shard
    assert calls == [] and off.corrupt_samples == 0
    with pytest.raises(ShardError):  # the same patch does see calls when verification is on
        next(TrainStream(lambda_config(shards), micro_batch=2))
    assert [str(p) for p in calls] == [str(path)]


def test_skip_counts_dropped_samples_continues_and_the_count_survives_resume(shards):
    path = shards / LAMBDA
    with open(path, "r+b") as handle:
        handle.truncate(sample_starts(path)[6][1])  # 4 of 10 samples lost every epoch
    config = lambda_config(shards, verify_shards=False, on_corrupt="skip")
    stream = TrainStream(config, micro_batch=2)
    take(stream, 4)
    state = stream.state_dict()
    counted = stream.corrupt_samples
    expected = take(stream, 8)  # 3 batches per epoch from the 6 windows left: crosses epoch ends
    assert counted == 4 and stream.corrupt_samples == 12
    resumed = TrainStream(config, micro_batch=2)
    resumed.load_state_dict(state)
    assert resumed.corrupt_samples == counted
    got = take(resumed, 8)
    assert resumed.corrupt_samples == stream.corrupt_samples  # the replay does not count twice
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(got, expected))


def test_skip_drops_a_shard_whose_digest_differs_and_trains_on_the_rest(shards, bundled_manifest):
    victim = bundled_manifest["species"]["dmel"]["splits"]["train"]["shards"][3]
    path = shards / "train" / Path(victim["path"]).name
    data = bytearray(path.read_bytes())
    data[dna_offset(path, 0)] ^= 0x20  # A -> a: a soft-mask flip, valid bases
    path.write_bytes(bytes(data))
    config = lambda_config(shards, mixture={"dmel": 1.0}, on_corrupt="skip")
    stream = TrainStream(config, micro_batch=16)
    epoch = -(-bundled_manifest["species"]["dmel"]["splits"]["train"]["samples"] // 16)
    take(stream, epoch + 2)
    assert stream.corrupt_samples >= victim["samples"] and stream.corrupt_samples % victim["samples"] == 0


def test_error_from_a_worker_process_is_one_line(shards):
    path = shards / LAMBDA
    with open(path, "r+b") as handle:
        handle.truncate(sample_starts(path)[2][1])
    stream = TrainStream(lambda_config(shards, num_workers=1), micro_batch=2)
    with pytest.raises(ShardError) as error:
        take(stream, 3)
    assert str(path) in str(error.value) and "\n" not in str(error.value) and "on_corrupt: skip" in str(error.value)


def test_skip_with_every_sample_of_a_species_dropped_is_one_line_not_an_endless_loop(shards):
    path = shards / LAMBDA
    path.write_bytes(path.read_bytes()[:100])  # not even one sample left of lambda's only shard
    stream = TrainStream(lambda_config(shards, verify_shards=False, on_corrupt="skip", num_workers=1), micro_batch=2)
    with pytest.raises(ShardError) as error:
        take(stream, 1)
    message = str(error.value)
    assert "species lambda" in message and "no usable sample" in message and "reshard" in message
    assert "\n" not in message


def test_damaged_validation_shard_is_an_error(shards):
    path = shards / "valid" / "lambda-000000.tar"
    path.write_bytes(path.read_bytes()[:1024])
    with pytest.raises(ShardError, match="valid/lambda-000000.tar"):
        list(validation_batches(lambda_config(shards), micro_batch=2))


def _tar(path: Path, samples: list[dict]) -> dict:
    with wds.TarWriter(str(path), encoder=False) as writer:
        for sample in samples:
            writer.write(sample)
    return {"path": str(path), "samples": len(samples)}


GOOD = {"dna": b"ACGTNacgtn", "json": json.dumps({"start": 10, "end": 20}).encode()}


@pytest.mark.parametrize("broken, expected", [
    ({"json": GOOD["json"]}, "missing the 'dna' member"),
    ({"dna": GOOD["dna"]}, "missing the 'json' member"),
    ({**GOOD, "json": b"{not json"}, "its 'json' member is unreadable"),
    ({**GOOD, "dna": b"ACGTXacgtn"}, "'dna' holds bytes other than A/C/G/T/N"),
    ({**GOOD, "dna": b"ACGT"}, "'dna' holds 4 bases, its json says 10"),
])
def test_corrupt_sample_or_missing_field_names_shard_and_key(tmp_path, broken, expected):
    entry = _tar(tmp_path / "s.tar", [{"__key__": "k0", **GOOD}, {"__key__": "k1", **broken},
                                      {"__key__": "k2", **GOOD}])
    with pytest.raises(ShardError) as error:
        list(ShardReader().windows([entry]))
    assert f"s.tar, sample key k1: {expected}" in str(error.value) and "\n" not in str(error.value)
    skipping = ShardReader(on_corrupt="skip")
    assert [w and w[0] for w in skipping.windows([entry])] == ["k0", None, "k2"] and skipping.corrupt == 1


def test_more_samples_than_listed_is_an_error(tmp_path):
    entry = _tar(tmp_path / "s.tar", [{"__key__": f"k{i}", **GOOD} for i in range(3)])
    with pytest.raises(ShardError, match="sample key k2: more samples than the 2"):
        list(ShardReader().windows([{**entry, "samples": 2}]))


def test_v1_manifest_is_read_with_a_warning_and_v2_needs_digests(shards, caplog):
    path = shards / "manifest.json"
    manifest = json.loads(path.read_text())
    lambda_shards = manifest["species"]["lambda"]["splits"]["train"]["shards"]
    del lambda_shards[0]["sha256"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"lists train/lambda-000000.tar without its sha256.*reshard"):
        read_manifest(path)
    manifest["format"] = "janus-shards-v1"
    path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        take(TrainStream(lambda_config(shards), micro_batch=2), 6)
    assert "lists no shard digests" in caplog.text


def test_each_shard_is_hashed_once_per_reader(bundled_manifest):
    train = [s for name in bundled_manifest["species_order"]
             for s in bundled_manifest["species"][name]["splits"]["train"]["shards"]]
    reader = ShardReader()
    for _ in range(2):  # a second epoch hashes nothing more
        assert sum(1 for _ in reader.windows(train)) == sum(s["samples"] for s in train)
    assert reader.hashed_bytes == sum(s["bytes"] for s in train)


@pytest.mark.parametrize("edit, expected", [
    ("absolute", r"species\.lambda\.splits\.train lists '/.*', which is not a path inside"),
    ("dotdot", r"species\.lambda\.splits\.train lists '\.\./.*', which is not a path inside"),
    ("nan_weight", r"species\.lambda\.weight must be a finite number >= 0 \(got nan\)"),
    ("negative_weight", r"species\.lambda\.weight must be a finite number >= 0 \(got -1\.0\)"),
])
def test_a_manifest_edited_to_leave_its_directory_or_with_a_bad_weight_is_refused(shards, edit, expected):
    """Issue 27, silent 4 and 5: a lambda entry pointing at another species' shard (outside the
    shard directory, or through '..') and a NaN or negative species weight name the manifest and key."""
    path = shards / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = manifest["species"]["lambda"]
    other = next(n for n in manifest["species_order"] if n != "lambda")
    victim = manifest["species"][other]["splits"]["train"]["shards"][0]["path"]
    if edit == "absolute":
        entry["splits"]["train"]["shards"][0]["path"] = str(shards / victim)
    elif edit == "dotdot":
        (shards.parent / "elsewhere").mkdir()
        shutil.copy(shards / victim, shards.parent / "elsewhere" / "x.tar")
        entry["splits"]["train"]["shards"][0]["path"] = "../elsewhere/x.tar"
    else:
        entry["weight"] = float("nan") if edit == "nan_weight" else -1.0
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=str(path).replace(".", r"\.") + ": " + expected):
        read_manifest(path)
