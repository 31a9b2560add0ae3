"""Training stream with exact resume, on top of torch's DataLoader and the slot streams.

Batching happens in the workers: each dataloader worker owns one slot (samples.SlotStream) and
yields whole (micro_batch, seq_len) batches, each carrying the worker's state after it. torch's
DataLoader hands out the batches of an IterableDataset round-robin over its workers (batch i
comes from worker i % W), so the main process knows which worker produced each batch it passes
on, and keeps that worker's state. Resuming after n batches restarts every worker from its kept
state and rotates the worker ids by n % W, so the first batch comes from the worker that an
uninterrupted run would have asked next. num_workers=0 runs the single slot in-process and
gives the same batches as num_workers=1.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from janus_pretrain.config import DataConfig
from janus_pretrain.data.manifest import mixture_weights, read_manifest
from janus_pretrain.data.samples import Crop, SlotStream
from janus_pretrain.data.shard_integrity import ShardError, ShardReader
from janus_pretrain.tokenizer import A_ID, COMPLEMENT_IDS, PAD_ID, T_ID, encode_numpy

STATE_VERSION = 1
log = logging.getLogger(__name__)


def encode_crops(crops: list[Crop], seq_len: int, repeat_weight: float) -> dict[str, torch.Tensor]:
    """Tokenise crops into a batch; shorter crops are padded (PAD id, loss weight 0).

    Built in numpy over the whole batch and wrapped once, so no torch op runs per row.
    """
    text = np.full((len(crops), seq_len), ord("N"), dtype=np.uint8)  # (B, L) ASCII, N placeholder in padding
    lengths = np.array([len(c.dna) for c in crops], dtype=np.int64)  # (B,)
    flip = np.array([c.rc for c in crops], dtype=bool)  # (B,)
    for row, crop in enumerate(crops):
        bases = np.frombuffer(crop.dna, dtype=np.uint8)
        text[row, :bases.size] = bases[::-1] if crop.rc else bases
    ids = encode_numpy(text.reshape(-1)).reshape(text.shape)  # (B, L)
    ids[flip] = COMPLEMENT_IDS[ids[flip]]  # reversed above, complemented here: the reverse complement
    padding = np.arange(seq_len)[None, :] >= lengths[:, None]  # (B, L)
    ids[padding] = PAD_ID
    is_base = (ids >= A_ID) & (ids <= T_ID)
    weight = np.where(text >= ord("a"), np.float32(repeat_weight), np.float32(1.0)) * is_base  # (B, L)
    species = np.array([c.species for c in crops], dtype=np.int64)  # (B,)
    return {"input_ids": torch.from_numpy(ids), "species": torch.from_numpy(species),
            "loss_weight": torch.from_numpy(weight.astype(np.float32))}


def shards_identity(manifest: dict) -> str:
    """Checksum of what the shards hold (inputs, windowing, per-shard counts), not of where they are."""
    content = [manifest["species_order"], manifest.get("input_sha256"), manifest["window_bp"],
               manifest.get("stride_bp"), manifest.get("min_window_bp"), manifest.get("max_n_frac"),
               [[Path(s["path"]).name, s["samples"]] for name in manifest["species_order"]
                for split in ("train", "valid", "test") for s in manifest["species"][name]["splits"][split]["shards"]]]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]


def _fingerprint(config: DataConfig, micro_batch: int, manifest: dict, weights: list[float]) -> dict:
    """What the batch sequence depends on besides seed/rank/world/workers: must match on resume."""
    return {"shards": shards_identity(manifest), "seq_len": config.seq_len, "weights": weights,
            "rc_augment": config.rc_augment, "max_n_frac": config.max_n_frac,
            "shuffle_buffer": config.shuffle_buffer, "crops_per_window": config.crops_per_window,
            "micro_batch": micro_batch}


class _Batches(IterableDataset):
    """Each dataloader worker: one slot's batches, each tagged with the worker's state after it.

    Holds plain values only (no reference to the TrainStream), so it pickles under 'spawn' too.
    """

    def __init__(self, stream: "TrainStream", starts: list, rotate: int):
        self.manifest, self.weights, self.config = stream.manifest, stream.weights, stream.config
        self.seed, self.rank, self.world_size, self.workers = stream.seed, stream.rank, stream.world_size, stream.workers
        self.micro_batch, self.starts, self.rotate = stream.micro_batch, starts, rotate

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = ((info.id if info else 0) + self.rotate) % self.workers
        c = self.config
        slot = SlotStream(self.manifest, self.weights, seed=self.seed, slot=self.rank * self.workers + worker,
                          n_slots=self.world_size * self.workers, seq_len=c.seq_len,
                          crops_per_window=c.crops_per_window, rc_augment=c.rc_augment,
                          max_n_frac=c.max_n_frac, shuffle_buffer=c.shuffle_buffer,
                          reader=ShardReader(c.verify_shards, c.on_corrupt))
        if self.starts[worker] is not None:
            slot.load_state_dict(self.starts[worker])
        while True:
            try:
                crops = [slot.next() for _ in range(self.micro_batch)]
            except ShardError as exc:
                # DataLoader would re-raise it wrapped in the worker's traceback; the main process
                # raises it again with just this line
                yield {"_error": str(exc)}
                return
            batch = encode_crops(crops, c.seq_len, c.repeat_weight)
            batch["_state"] = json.dumps({"worker": worker, "slot": slot.state_dict()})
            yield batch


class TrainStream:
    """Infinite iterator of training batches for one rank; state_dict()/load_state_dict() resume exactly.

    batch["input_ids"] (B, L) long, batch["species"] (B,) long, batch["loss_weight"] (B, L) float32
    (0 where the token is not A/C/G/T, data.repeat_weight on soft-masked bases, else 1).

    A damaged shard or sample raises ShardError (one line: shard, sample key, what to do); under
    data.on_corrupt: skip the samples dropped instead are counted in `corrupt_samples`.
    """

    def __init__(self, config: DataConfig, micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
        if micro_batch < 1 or config.seq_len < 1:
            raise ValueError(f"micro_batch ({micro_batch}) and data.seq_len ({config.seq_len}) must be >= 1")
        self.config, self.micro_batch, self.rank, self.world_size, self.seed = config, micro_batch, rank, world_size, seed
        self.manifest = read_manifest(config.manifest)
        self.weights = mixture_weights(self.manifest, config.mixture)
        self.species_names: list[str] = list(self.manifest["species_order"])
        self.workers = max(1, config.num_workers)
        if config.seq_len > self.manifest["window_bp"]:
            log.warning("data.seq_len=%d exceeds the shards' window_bp=%d: every sample is padded (loss weight 0)",
                        config.seq_len, self.manifest["window_bp"])
        crops = config.crops_per_window or max(1, self.manifest["window_bp"] // config.seq_len)
        if config.shuffle_buffer < 4 * crops:
            log.warning("data.shuffle_buffer=%d holds fewer than 4 windows' worth of crops (%d per window): "
                        "consecutive samples of a species will mostly share a window; raise shuffle_buffer or "
                        "lower crops_per_window", config.shuffle_buffer, crops)
        self.batches = 0  # batches handed out so far
        self.worker_states: list[dict | None] = [None] * self.workers
        self._iter: Iterator[dict] | None = None
        self._loader: DataLoader | None = None

    def __iter__(self) -> "TrainStream":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._iter is None:
            dataset = _Batches(self, list(self.worker_states), self.batches % self.workers)
            if self.config.num_workers > 0:
                self._loader = DataLoader(dataset, batch_size=None, num_workers=self.workers, prefetch_factor=2)
                self._iter = iter(self._loader)
            else:
                self._iter = iter(dataset)
        batch = next(self._iter)
        if "_error" in batch:
            self.close()
            raise ShardError(batch["_error"])
        tag = json.loads(batch.pop("_state"))
        self.worker_states[tag["worker"]] = tag["slot"]
        self.batches += 1
        return batch

    @property
    def corrupt_samples(self) -> int:
        """Samples dropped as corrupt (data.on_corrupt: skip) by this rank's workers over the whole run.

        Each worker's count travels in its state with every batch and is saved in checkpoints, so
        it includes the samples dropped before a resume. The trainer logs it as data/corrupt_samples.
        """
        return sum(int(state.get("corrupt", 0)) for state in self.worker_states if state)

    def close(self) -> None:
        """Stop the worker processes (they restart on the next batch)."""
        self._iter, self._loader = None, None

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "batches": self.batches, "worker_states": list(self.worker_states),
                "seed": self.seed, "rank": self.rank, "world_size": self.world_size, "workers": self.workers,
                "fingerprint": _fingerprint(self.config, self.micro_batch, self.manifest, self.weights)}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly after the batches that `state` had handed out (same seed, rank, world, workers)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data loader state version {state.get('version')!r}, expected {STATE_VERSION}")
        mine = self.state_dict()
        for key in ("seed", "rank", "world_size", "workers", "fingerprint"):
            if state[key] != mine[key]:
                raise ValueError(f"cannot resume the data stream exactly: '{key}' was {state[key]!r} when saved "
                                 f"and is {mine[key]!r} now (data.num_workers, world size, seed and the data "
                                 f"section must match the saved run)")
        self.close()
        self.batches = int(state["batches"])
        self.worker_states = list(state["worker_states"])

