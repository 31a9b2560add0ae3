"""Streaming loader: exact resume (workers, ranks), disjoint slots, mixture, crops, RC, repeat weights, N filter."""
from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
import torch

from data_fixtures import all_samples, bundled_manifest, bundled_shards  # noqa: F401
from janus_pretrain.config import DataConfig
from janus_pretrain.data import ManifestError, TrainStream, encode_crops, read_manifest, validation_batches
from janus_pretrain.data.samples import SlotStream, SpeciesStream
from janus_pretrain.tokenizer import N_ID, PAD_ID, encode

COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def config(shards, **overrides) -> DataConfig:
    values = dict(manifest=str(shards), seq_len=1024, shuffle_buffer=16, num_workers=0)
    values.update(overrides)
    return DataConfig(**values)


def take(stream, n: int) -> list[dict]:
    return [next(stream) for _ in range(n)]


def assert_same(batches_a: list[dict], batches_b: list[dict]) -> None:
    assert len(batches_a) == len(batches_b)
    for i, (a, b) in enumerate(zip(batches_a, batches_b)):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"batch {i}: {key} differs"


def slot_stream(manifest, cfg: DataConfig, weights=None, slot=0, n_slots=1, seed=0) -> SlotStream:
    from janus_pretrain.data import mixture_weights
    return SlotStream(manifest, weights or mixture_weights(manifest, cfg.mixture), seed=seed, slot=slot,
                      n_slots=n_slots, seq_len=cfg.seq_len, crops_per_window=cfg.crops_per_window,
                      rc_augment=cfg.rc_augment, max_n_frac=cfg.max_n_frac, shuffle_buffer=cfg.shuffle_buffer)


@pytest.fixture(scope="module")
def windows(bundled_manifest):
    """key -> window bases of every train and valid sample (read with tarfile, not the loader)."""
    return {key: dna for _, key, dna, _ in all_samples(bundled_manifest)}


def test_resume_is_exact_with_a_worker_process(bundled_shards):
    cfg = config(bundled_shards, num_workers=1)
    stream = TrainStream(cfg, micro_batch=2, seed=3)
    take(stream, 7)
    state = json.loads(json.dumps(stream.state_dict()))  # plain JSON types: fits any checkpoint
    assert len(json.dumps(state)) < 20_000  # no sample buffers in the state
    expected = take(stream, 6)
    stream.close()
    resumed = TrainStream(cfg, micro_batch=2, seed=3)
    resumed.load_state_dict(state)
    assert_same(take(resumed, 6), expected)
    resumed.close()


@pytest.mark.parametrize("rank", [0, 1])
def test_resume_is_exact_for_two_ranks_with_two_workers(bundled_shards, rank):
    cfg = config(bundled_shards, num_workers=2)
    stream = TrainStream(cfg, micro_batch=2, rank=rank, world_size=2, seed=1)
    first = take(stream, 5)  # odd: the next batch comes from worker 1, not 0
    state = stream.state_dict()
    expected = take(stream, 5)
    stream.close()
    resumed = TrainStream(cfg, micro_batch=2, rank=rank, world_size=2, seed=1)
    resumed.load_state_dict(state)
    assert_same(take(resumed, 5), expected)
    resumed.close()
    other = TrainStream(cfg, micro_batch=2, rank=1 - rank, world_size=2, seed=1)
    assert not torch.equal(take(other, 1)[0]["input_ids"], first[0]["input_ids"])  # ranks see other data
    other.close()


def test_in_process_equals_one_worker_and_seed_decides(bundled_shards):
    in_process = take(TrainStream(config(bundled_shards, num_workers=0), micro_batch=2, seed=5), 4)
    worker = TrainStream(config(bundled_shards, num_workers=1), micro_batch=2, seed=5)
    assert_same(take(worker, 4), in_process)
    worker.close()
    again = take(TrainStream(config(bundled_shards), micro_batch=2, seed=5), 4)
    assert_same(again, in_process)
    other_seed = take(TrainStream(config(bundled_shards), micro_batch=2, seed=6), 4)
    assert not torch.equal(other_seed[0]["input_ids"], in_process[0]["input_ids"])


def test_resume_refuses_a_different_run_shape(bundled_shards):
    stream = TrainStream(config(bundled_shards), micro_batch=2)
    take(stream, 1)
    state = stream.state_dict()
    with pytest.raises(ValueError, match="rank 0 of 1's data state given to rank 0 of 2"):
        TrainStream(config(bundled_shards, streams=2), micro_batch=2, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="micro batch"):
        TrainStream(config(bundled_shards), micro_batch=1).load_state_dict(state)
    with pytest.raises(ValueError, match="fingerprint"):
        TrainStream(config(bundled_shards, seq_len=512), micro_batch=2).load_state_dict(state)


def _global_order(shards, world: int, workers: int, steps: int, accum: int, state=None) -> tuple[list, list]:
    """Micro batches of `steps` optimizer steps in global order (g = n * world + rank), and the
    ranks' states after them."""
    streams = [TrainStream(config(shards, num_workers=workers, streams=4), micro_batch=2, rank=r,
                           world_size=world, seed=7) for r in range(world)]
    for stream in streams:
        if state is not None:
            stream.load_state_dict(state)
    per_rank = [take(stream, steps * accum) for stream in streams]
    states = [stream.state_dict() for stream in streams]
    for stream in streams:
        stream.close()
    return [per_rank[g % world][g // world] for g in range(steps * accum * world)], states


def test_the_global_sample_order_does_not_depend_on_ranks_or_workers(bundled_shards):
    """Same data.streams: 1 rank x 4 micro batches, 2 ranks x 2, 4 ranks x 1 per step (with 0, 1
    or 2 worker processes) hand out the same micro batches in the same global order."""
    one, _ = _global_order(bundled_shards, world=1, workers=0, steps=3, accum=4)
    for world, workers in ((2, 2), (4, 1), (1, 2)):
        other, _ = _global_order(bundled_shards, world=world, workers=workers, steps=3, accum=4 // world)
        assert_same(other, one)


@pytest.mark.parametrize("target", [1, 4])
def test_elastic_resume_continues_the_global_stream_on_another_rank_count(bundled_shards, target):
    """2 ranks run 3 steps; every rank's state merged (global_state) lets 1 or 4 ranks continue
    with exactly the micro batches an uninterrupted 1-rank run takes next: none repeated, none skipped."""
    from janus_pretrain.data.loader import global_state

    straight, _ = _global_order(bundled_shards, world=1, workers=0, steps=5, accum=4)
    first, states = _global_order(bundled_shards, world=2, workers=2, steps=3, accum=2)
    state = json.loads(json.dumps(global_state(states)))
    rest, _ = _global_order(bundled_shards, world=target, workers=1, steps=2, accum=4 // target, state=state)
    assert_same(first + rest, straight)


def test_elastic_resume_refuses_rank_counts_that_do_not_divide_the_streams(bundled_shards):
    from janus_pretrain.data.loader import global_state

    _, states = _global_order(bundled_shards, world=2, workers=1, steps=1, accum=1)
    with pytest.raises(ValueError, match="3 ranks do not divide it"):
        TrainStream(config(bundled_shards), micro_batch=2, rank=0, world_size=3, seed=7).load_state_dict(
            global_state(states))


def test_workers_are_lowered_to_divide_each_ranks_slots(bundled_shards):
    stream = TrainStream(config(bundled_shards, num_workers=3, streams=4), micro_batch=2, rank=0, world_size=1)
    assert stream.workers == 2  # 4 slots per rank: 3 workers would not share them evenly


def test_a_version_1_state_with_one_worker_per_rank_still_resumes(bundled_shards):
    stream = TrainStream(config(bundled_shards, num_workers=1), micro_batch=2, rank=1, world_size=2, seed=2)
    take(stream, 3)
    state = stream.state_dict()
    expected = take(stream, 2)
    stream.close()
    old = {"version": 1, "batches": state["batches"], "worker_states": [state["slots"]["1"]], "seed": 2, "rank": 1,
           "world_size": 2, "workers": 1, "fingerprint": state["fingerprint"]}
    resumed = TrainStream(config(bundled_shards, num_workers=1), micro_batch=2, rank=1, world_size=2, seed=2)
    resumed.load_state_dict(old)
    assert_same(take(resumed, 2), expected)
    resumed.close()
    with pytest.raises(ValueError, match="version 1 with 2 workers"):
        resumed.load_state_dict({**old, "workers": 2, "worker_states": [None, None]})


@pytest.mark.parametrize("species", ["dmel", "lambda", "hsap_chrM"])  # many shards / fewer shards than slots
def test_slots_of_ranks_and_workers_are_disjoint(bundled_manifest, species):
    shards = bundled_manifest["species"][species]["splits"]["train"]["shards"]
    every = {k for _, k, _, m in all_samples(bundled_manifest, "train") if m["species"] == species}
    for epoch in (0, 1):
        seen: list[set] = []
        for slot in range(4):  # 2 ranks x 2 workers
            stream = SpeciesStream(species, 0, shards, seed=0, slot=slot, n_slots=4, seq_len=1024,
                                   crops_per_window=0, rc_augment=False, max_n_frac=1.0, shuffle_buffer=0)
            seen.append({key for key, _ in stream._my_windows(epoch)})
        assert all(seen) and sum(map(len, seen)) == len(every)  # non-empty, no window twice ...
        assert set().union(*seen) == every  # ... and the whole species once per epoch


def test_mixture_weights_are_respected(bundled_manifest, bundled_shards):
    cfg = config(bundled_shards, mixture={"dmel": 3.0, "scer": 1.0}, seq_len=4096, crops_per_window=1)
    stream = slot_stream(bundled_manifest, cfg)
    n = 2000
    counts = Counter(stream.next().species for _ in range(n))
    order = bundled_manifest["species_order"]
    assert set(counts) == {order.index("dmel"), order.index("scer")}
    share = counts[order.index("dmel")] / n
    assert abs(share - 0.75) < 5 * np.sqrt(0.75 * 0.25 / n)  # 5 sigma of a binomial
    default = TrainStream(config(bundled_shards), micro_batch=8)
    ids = torch.cat([b["species"] for b in take(default, 6)])
    assert len(set(ids.tolist())) >= 3  # manifest weights mix several species


def test_crops_are_reverse_complemented_truly_and_weighted_by_repeats(bundled_manifest, bundled_shards, windows):
    cfg = config(bundled_shards, rc_augment=True, repeat_weight=0.25, max_n_frac=1.0, seq_len=700)
    stream = slot_stream(bundled_manifest, cfg, seed=2)
    crops = [stream.next() for _ in range(64)]
    assert 10 < sum(c.rc for c in crops) < 54
    for crop in crops:
        window = windows[crop.key].decode()
        raw = window[crop.offset:crop.offset + cfg.seq_len]
        assert bytes(crop.dna) == raw.encode() and len(raw) == min(700, len(window))
        text = raw.translate(COMPLEMENT)[::-1] if crop.rc else raw
        batch = encode_crops([crop], cfg.seq_len, cfg.repeat_weight)
        n = len(text)
        assert torch.equal(batch["input_ids"][0, :n], encode(text))
        expected = [0.0 if c in "Nn" else 0.25 if c.islower() else 1.0 for c in text]
        assert batch["loss_weight"][0, :n].tolist() == expected
    assert any(c.islower() for c in windows[crops[0].key].decode())  # the bundled genomes are soft-masked


def test_crop_lengths_offsets_and_padding(bundled_manifest, bundled_shards, windows):
    cfg = config(bundled_shards, seq_len=1000, max_n_frac=1.0, shuffle_buffer=0, mixture={"scer": 1.0})
    stream = slot_stream(bundled_manifest, cfg)
    per_window = Counter()
    epoch_size = sum(max(1, len(windows[k]) // 1000) for _, k, _, m in all_samples(bundled_manifest, "train")
                     if m["species"] == "scer")
    for _ in range(epoch_size):
        crop = stream.next()
        length = len(windows[crop.key])
        assert len(crop.dna) == min(1000, length) and 0 <= crop.offset <= max(0, length - 1000)
        per_window[crop.key] += 1
    assert all(count == max(1, len(windows[k]) // 1000) for k, count in per_window.items())
    assert sum(per_window.values()) == epoch_size and stream.streams[0].epoch == 0
    long = config(bundled_shards, seq_len=5000, mixture={"lambda": 1.0})
    batch = next(TrainStream(long, micro_batch=2))
    assert (batch["input_ids"][:, 4096:] == PAD_ID).all() and (batch["loss_weight"][:, 4096:] == 0).all()
    assert (batch["input_ids"][:, :4096] != PAD_ID).all()


def test_n_filter_drops_crops_over_max_n_frac(bundled_manifest, bundled_shards):
    def one_epoch(max_n_frac):
        cfg = config(bundled_shards, mixture={"dmel": 1.0}, max_n_frac=max_n_frac, shuffle_buffer=0)
        stream = slot_stream(bundled_manifest, cfg).streams[0]
        crops = []
        while True:
            crop = stream.next()
            if stream.epoch > 0:  # first crop of the next epoch
                return crops
            crops.append(crop)

    strict, loose = one_epoch(0.0), one_epoch(1.0)
    with_n = [c for c in loose if b"N" in bytes(c.dna).upper()]
    assert with_n and len(strict) == len(loose) - len(with_n)
    assert all(b"N" not in bytes(c.dna).upper() for c in strict)
    batch = encode_crops(strict[:8], 1024, 1.0)
    assert not (batch["input_ids"] == N_ID).any()


def test_validation_covers_the_valid_split_once_over_ranks(bundled_manifest, bundled_shards):
    cfg = config(bundled_shards, seq_len=1000)
    per_rank = [list(validation_batches(cfg, micro_batch=3, rank=r, world_size=2)) for r in range(2)]
    assert [n for n, _ in per_rank[0]] == [n for n, _ in per_rank[1]]  # same batches per species on each rank
    rows = Counter()
    for name, batch in itertools.chain(*per_rank):
        for ids, weight in zip(batch["input_ids"], batch["loss_weight"]):
            if (ids != PAD_ID).any():
                rows[(name, tuple(ids[ids != PAD_ID].tolist()))] += 1
    expected = Counter()
    for _, _, dna, meta in all_samples(bundled_manifest, "valid"):
        for start in range(0, len(dna), 1000):
            expected[(meta["species"], tuple(encode(dna[start:start + 1000]).tolist()))] += 1
    assert rows == expected and len(expected) > 10
    again = list(validation_batches(cfg, micro_batch=3, rank=1, world_size=2))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for (_, a), (_, b) in zip(again, per_rank[1]))
    capped = Counter(n for n, _ in validation_batches(config(bundled_shards, valid_max_batches=1), micro_batch=2))
    assert set(capped.values()) == {1} and "hsap_chrM" not in capped  # chrM has no valid split


def test_clear_errors_for_missing_manifest_and_unknown_species(tmp_path, bundled_shards):
    with pytest.raises(ManifestError, match="create it with janus shard --genomes"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(ManifestError, match=r"data.mixture.*'mouse'"):
        TrainStream(config(bundled_shards, mixture={"mouse": 1.0}), micro_batch=1)


def test_resume_from_a_moved_shard_directory(bundled_shards, tmp_path):
    import shutil
    stream = TrainStream(config(bundled_shards), micro_batch=2, seed=4)
    take(stream, 3)
    state = stream.state_dict()
    expected = take(stream, 3)
    moved = tmp_path / "elsewhere"
    shutil.copytree(bundled_shards, moved)
    resumed = TrainStream(config(moved), micro_batch=2, seed=4)
    resumed.load_state_dict(state)  # the state names what the shards hold, not where they are
    assert_same(take(resumed, 3), expected)
