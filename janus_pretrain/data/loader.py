"""Training stream with exact resume, also onto another number of ranks or workers.

The global stream. Samples come from `data.streams` slot streams (samples.SlotStream, each a
pure function of (seed, slot, streams) and the manifest). Micro batch g of the whole run (counted
over all ranks, g = 0, 1, 2, ...) is the next `micro_batch` crops of slot g % S. Rank r of W
takes the micro batches g = n * W + r (n = 0, 1, ... its own count), so it owns exactly the slots
s = r (mod W) and visits them in turn; this needs W to divide S. Within a rank, dataloader worker
w of K takes the rank's batches n = w (mod K) (torch's DataLoader hands out an IterableDataset's
batches round-robin over its workers), which needs K to divide S / W; K is lowered to the largest
such divisor of data.num_workers when needed.

So the stream does not depend on W or K: an optimizer step of M = grad_accum * W micro batches
consumes micro batches [t*M, (t+1)*M) whatever the layout, as long as micro_batch and the global
batch stay. A checkpoint holds every slot's state (a few numbers, see samples.py) and the count
of micro batches handed out; a resume on any W dividing S continues every slot where it stopped:
no sample repeated, none skipped, at the granularity of a micro batch.

Each batch carries its slot's state after it, so the main process knows every slot's position
without asking the workers. num_workers=0 runs the slots in-process and gives the same batches.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
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

STATE_VERSION = 2  # 2: slots by id over data.streams (1: one slot per rank x worker)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenEncoding:
    """How bases become ids and which ids carry loss weight: the model's tokenizer mode and loss
    targets (model.tokenizer, model.loss_targets), passed in by the run builder."""
    tokenizer: str = "janus"  # janus_pretrain.tokenizer.TOKENIZER_MODES
    targets: str = "bases"  # bases: A/C/G/T carry weight; non_pad (official JanusDNA): every id but [PAD]


def encode_crops(crops: list[Crop], seq_len: int, repeat_weight: float,
                 encoding: TokenEncoding = TokenEncoding()) -> dict[str, torch.Tensor]:
    """Tokenise crops into a batch; shorter crops are padded (PAD id, loss weight 0).

    Built in numpy over the whole batch and wrapped once, so no torch op runs per row.
    """
    text = np.full((len(crops), seq_len), ord("N"), dtype=np.uint8)  # (B, L) ASCII, N placeholder in padding
    lengths = np.array([len(c.dna) for c in crops], dtype=np.int64)  # (B,)
    flip = np.array([c.rc for c in crops], dtype=bool)  # (B,)
    for row, crop in enumerate(crops):
        bases = np.frombuffer(crop.dna, dtype=np.uint8)
        text[row, :bases.size] = bases[::-1] if crop.rc else bases
    ids = encode_numpy(text.reshape(-1), encoding.tokenizer).reshape(text.shape)  # (B, L)
    ids[flip] = COMPLEMENT_IDS[ids[flip]]  # reversed above, complemented here: the reverse complement
    padding = np.arange(seq_len)[None, :] >= lengths[:, None]  # (B, L)
    ids[padding] = PAD_ID
    counted = (ids != PAD_ID) if encoding.targets == "non_pad" else (ids >= A_ID) & (ids <= T_ID)
    weight = np.where(text >= ord("a"), np.float32(repeat_weight), np.float32(1.0)) * counted  # (B, L)
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


def worker_count(streams: int, world_size: int, wanted: int) -> int:
    """Dataloader workers per rank: the largest divisor of streams / world_size not above `wanted`."""
    per_rank = streams // world_size
    return max(k for k in range(1, max(1, min(wanted, per_rank)) + 1) if per_rank % k == 0)


class _Batches(IterableDataset):
    """Each dataloader worker: its slots' batches in the global order, each tagged with the
    slot's state after it.

    Holds plain values only (no reference to the TrainStream), so it pickles under 'spawn' too.
    """

    def __init__(self, stream: "TrainStream"):
        self.manifest, self.weights, self.config = stream.manifest, stream.weights, stream.config
        self.seed, self.rank, self.world_size = stream.seed, stream.rank, stream.world_size
        self.streams, self.workers, self.micro_batch = stream.streams, stream.workers, stream.micro_batch
        self.first = stream.batches  # the rank's count of batches already handed out
        self.encoding = stream.encoding
        self.states = dict(stream.slot_states)

    def _slot(self, slot: int, reader: ShardReader) -> SlotStream:
        c = self.config
        stream = SlotStream(self.manifest, self.weights, seed=self.seed, slot=slot, n_slots=self.streams,
                            seq_len=c.seq_len, crops_per_window=c.crops_per_window, rc_augment=c.rc_augment,
                            max_n_frac=c.max_n_frac, shuffle_buffer=c.shuffle_buffer, reader=reader)
        if slot in self.states:
            stream.load_state_dict(self.states[slot])
        return stream

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        # DataLoader worker i gives the i-th, (i+K)-th ... batch from now on: the rank's batch
        # first + i, whose worker in the global order is (first + i) % K
        n = self.first + (info.id if info else 0)
        step = self.workers if info else 1
        per_rank = self.streams // self.world_size
        slots: dict[int, SlotStream] = {}
        verified: set[str] = set()  # shards hashed by this worker, whichever slot read them first
        c = self.config
        while True:
            slot = self.rank + (n % per_rank) * self.world_size
            try:
                if slot not in slots:
                    # one reader per slot: its count of dropped samples is part of the slot's state
                    slots[slot] = self._slot(slot, ShardReader(c.verify_shards, c.on_corrupt, verified))
                crops = [slots[slot].next() for _ in range(self.micro_batch)]
            except ShardError as exc:
                # DataLoader would re-raise it wrapped in the worker's traceback; the main process
                # raises it again with just this line
                yield {"_error": str(exc)}
                return
            batch = encode_crops(crops, c.seq_len, c.repeat_weight, self.encoding)
            batch["_state"] = json.dumps({"slot": slot, "state": slots[slot].state_dict()})
            yield batch
            n += step


class TrainStream:
    """Infinite iterator of training batches for one rank; state_dict()/load_state_dict() resume exactly.

    batch["input_ids"] (B, L) long, batch["species"] (B,) long, batch["loss_weight"] (B, L) float32
    (0 where the token is not A/C/G/T, or under encoding.targets non_pad where it is [PAD];
    data.repeat_weight on soft-masked bases, else 1).

    A damaged shard or sample raises ShardError (one line: shard, sample key, what to do); under
    data.on_corrupt: skip the samples dropped instead are counted in `corrupt_samples`.
    """

    def __init__(self, config: DataConfig, micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 encoding: TokenEncoding = TokenEncoding()):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
        if micro_batch < 1 or config.seq_len < 1:
            raise ValueError(f"micro_batch ({micro_batch}) and data.seq_len ({config.seq_len}) must be >= 1")
        self.config, self.micro_batch, self.rank, self.world_size, self.seed = config, micro_batch, rank, world_size, seed
        self.encoding = encoding
        self.manifest = read_manifest(config.manifest)
        self.weights = mixture_weights(self.manifest, config.mixture)
        self.species_names: list[str] = list(self.manifest["species_order"])
        if config.seq_len > self.manifest["window_bp"]:
            log.warning("data.seq_len=%d exceeds the shards' window_bp=%d: every sample is padded (loss weight 0)",
                        config.seq_len, self.manifest["window_bp"])
        crops = config.crops_per_window or max(1, self.manifest["window_bp"] // config.seq_len)
        if config.shuffle_buffer < 4 * crops:
            log.warning("data.shuffle_buffer=%d holds fewer than 4 windows' worth of crops (%d per window): "
                        "consecutive samples of a species will mostly share a window; raise shuffle_buffer or "
                        "lower crops_per_window", config.shuffle_buffer, crops)
        self._set_streams(config.streams or world_size * max(1, config.num_workers))
        self.batches = 0  # batches this rank handed out so far
        self.slot_states: dict[int, dict] = {}  # state of each of this rank's slots after its last batch
        self._iter: Iterator[dict] | None = None
        self._loader: DataLoader | None = None

    def _set_streams(self, streams: int) -> None:
        if streams % self.world_size:
            raise ValueError(f"the data stream has {streams} slots (data.streams) and {self.world_size} ranks do not "
                             f"divide it; run on a number of ranks that divides {streams}")
        self.streams = streams
        self.workers = worker_count(streams, self.world_size, max(1, self.config.num_workers))
        if self.workers < self.config.num_workers:
            log.warning("data.num_workers=%d lowered to %d: each rank's %d of the %d slots (data.streams) are "
                        "split evenly over its workers", self.config.num_workers, self.workers,
                        streams // self.world_size, streams)

    def __iter__(self) -> "TrainStream":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._iter is None:
            dataset = _Batches(self)
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
        self.slot_states[tag["slot"]] = tag["state"]
        self.batches += 1
        return batch

    @property
    def corrupt_samples(self) -> int:
        """Samples dropped as corrupt (data.on_corrupt: skip) from this rank's slots over the whole run.

        Each slot's count travels in its state with every batch and is saved in checkpoints, so
        it includes the samples dropped before a resume. The trainer logs it as data/corrupt_samples.
        """
        return sum(int(state.get("corrupt", 0)) for state in self.slot_states.values())

    def close(self) -> None:
        """Stop the worker processes (they restart on the next batch)."""
        self._iter, self._loader = None, None

    @staticmethod
    def global_state(states: list[dict]) -> dict:
        """Every rank's state_dict() -> one state any rank of any layout can load (module function)."""
        return global_state(states)

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "batches": self.batches, "streams": self.streams,
                "slots": {str(k): v for k, v in sorted(self.slot_states.items())},
                "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "fingerprint": _fingerprint(self.config, self.micro_batch, self.manifest, self.weights)}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly after the micro batches that `state` had handed out: this rank's own
        state (same world size), or global_state() of every rank's (any world size dividing the
        slot count)."""
        state = _upgrade(state)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data loader state version {state.get('version')!r}, expected {STATE_VERSION}")
        mine = self.state_dict()
        for key in ("seed", "fingerprint"):
            if state[key] != mine[key]:
                raise ValueError(f"cannot resume the data stream exactly: '{key}' was {state[key]!r} when saved "
                                 f"and is {mine[key]!r} now (the seed, micro batch and data section must match "
                                 f"the saved run)")
        if "global_batches" not in state and (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise ValueError(f"rank {state['rank']} of {state['world_size']}'s data state given to rank {self.rank} "
                             f"of {self.world_size}; pass global_state() of every rank's state")
        if self.config.streams and self.config.streams != state["streams"]:
            raise ValueError(f"data.streams is {self.config.streams} and the saved stream has {state['streams']} "
                             f"slots; the slot count is fixed for the whole run (set data.streams to "
                             f"{state['streams']} or 0)")
        self._set_streams(int(state["streams"]))
        slots = {int(k): v for k, v in state["slots"].items()}
        if "global_batches" in state:
            total = int(state["global_batches"])
            if total % self.world_size:
                raise ValueError(f"{total} micro batches were handed out over all ranks, not a multiple of the "
                                 f"{self.world_size} ranks; the stream can only be split after whole optimizer steps")
            self.batches = total // self.world_size
            slots = {s: v for s, v in slots.items() if s % self.world_size == self.rank}
        else:
            self.batches = int(state["batches"])
        self.close()
        self.slot_states = slots


def global_state(states: list[dict]) -> dict:
    """Every rank's state_dict() -> one state any rank of any layout can load (slots by id)."""
    states = sorted((_upgrade(s) for s in states), key=lambda s: s["rank"])
    world = states[0]["world_size"]
    if [s["rank"] for s in states] != list(range(world)):
        raise ValueError(f"data states of ranks {[s['rank'] for s in states]} given, need every rank of {world}")
    for key in ("version", "streams", "seed", "fingerprint"):
        if any(s[key] != states[0][key] for s in states):
            raise ValueError(f"the ranks' data states disagree on '{key}'")
    if len({s["batches"] for s in states}) != 1:
        raise ValueError(f"ranks handed out different numbers of micro batches {[s['batches'] for s in states]}")
    slots = {k: v for s in states for k, v in s["slots"].items()}
    return {"version": STATE_VERSION, "global_batches": states[0]["batches"] * world, "streams": states[0]["streams"],
            "slots": slots, "seed": states[0]["seed"], "fingerprint": states[0]["fingerprint"]}


def _upgrade(state: dict) -> dict:
    """A version 1 state (one slot per rank x worker, before data.streams) with one worker per
    rank numbered its slots as this version does: convert it; with more workers it cannot be."""
    if state.get("version") != 1:
        return state
    if state.get("workers") != 1:
        raise ValueError(f"data loader state version 1 with {state.get('workers')} workers per rank (written before "
                         f"elastic resume); continue with the janus-pretrain version that wrote it, or start a new run "
                         f"from its weights with checkpoint.init_from")
    slots = {str(state["rank"]): state["worker_states"][0]} if state["worker_states"][0] is not None else {}
    return {"version": STATE_VERSION, "batches": state["batches"], "streams": state["world_size"], "slots": slots,
            "seed": state["seed"], "rank": state["rank"], "world_size": state["world_size"],
            "fingerprint": state["fingerprint"]}
