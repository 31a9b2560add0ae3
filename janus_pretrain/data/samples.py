"""The training sample sequence of one loader slot, as a pure function of its coordinates.

A slot is one dataloader worker of one rank: slot = rank * workers + worker, n_slots = world *
workers. Everything a slot yields follows from (seed, n_slots, slot, epoch) and the manifest:

- per species and epoch, a seeded permutation shared by all slots partitions the species' train
  shards over the slots (or, when the species has fewer shards than slots, its windows), so
  slots never overlap within an epoch;
- per species, epoch and slot, one RNG draws the crop offsets, the reverse-complement flips and
  the shuffle-buffer picks; the shuffle buffer empties at the end of each epoch;
- per slot, one RNG picks the species of each sample by the mixture weights.

So the state of a slot is small: the mixing RNG's state and, per species, (epoch, samples taken
in that epoch). Restoring replays that species' current epoch up to that point, which costs at
most one epoch's share of reading and slicing, never tokenisation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from janus_pretrain.data.shard_integrity import ShardError, ShardReader

log = logging.getLogger(__name__)

_SHARD_SALT, _CROP_SALT, _MIX_SALT = 0x5348, 0x4352, 0x4D49  # separate the RNG streams


@dataclass
class Crop:
    species: int  # species id (index in the manifest's species_order)
    key: str  # webdataset __key__ of the window it was cut from
    offset: int  # start of the crop inside the window
    rc: bool  # reverse-complemented at tokenisation
    dna: memoryview  # the crop's ASCII bases (case kept)


def n_fraction(dna: memoryview | bytes) -> float:
    codes = np.frombuffer(dna, dtype=np.uint8)
    return float(np.count_nonzero((codes | 0x20) == ord("n"))) / max(1, codes.size)


class SpeciesStream:
    """Shuffled crops of one species for one slot, epoch after epoch; restartable at any point."""

    def __init__(self, name: str, species: int, shards: list[dict], *, seed: int, slot: int,
                 n_slots: int, seq_len: int, crops_per_window: int, rc_augment: bool, max_n_frac: float,
                 shuffle_buffer: int, reader: ShardReader | None = None):
        """shards: the manifest's entries of the species' train split (path, samples, sha256, bytes)."""
        self.name, self.species = name, species
        self.shards = [s for s in shards if s["samples"] > 0]
        self.reader = reader or ShardReader()
        self.seed, self.slot, self.n_slots = seed, slot, n_slots
        self.seq_len, self.crops_per_window = seq_len, crops_per_window
        self.rc_augment, self.max_n_frac, self.shuffle_buffer = rc_augment, max_n_frac, shuffle_buffer
        self.epoch, self.consumed = 0, 0
        self._items: Iterator[Crop] | None = None

    def _my_windows(self, epoch: int) -> Iterator[tuple[str, bytes]]:
        """This slot's share of the species' windows in `epoch` (disjoint from every other slot's)."""
        rng = np.random.default_rng([self.seed, self.species, epoch, _SHARD_SALT])  # same on all slots
        if len(self.shards) >= self.n_slots:
            order = rng.permutation(len(self.shards))[self.slot::self.n_slots]
            yield from filter(None, self.reader.windows([self.shards[i] for i in order]))
            return
        total = sum(s["samples"] for s in self.shards)
        if total >= self.n_slots:  # few shards: every slot reads them all and keeps its windows
            keep = rng.permutation(total) % self.n_slots == self.slot
        else:  # fewer windows than slots: overlap cannot be avoided; crops still differ per slot
            if epoch == 0 and self.slot == 0:
                log.warning("species %s has %d train windows for %d loader slots; slots share windows",
                            self.name, total, self.n_slots)
            keep = np.arange(total) == self.slot % total
        # a dropped sample (on_corrupt: skip) is a None that keeps its index: the partition holds
        for index, window in enumerate(self.reader.windows(self.shards)):
            if keep[index] and window is not None:
                yield window

    def _crops(self, epoch: int, rng: np.random.Generator) -> Iterator[Crop]:
        for key, dna in self._my_windows(epoch):
            view = memoryview(dna)
            length = len(dna)
            count = self.crops_per_window or max(1, length // self.seq_len)
            span = max(0, length - self.seq_len)
            offsets = rng.integers(0, span + 1, size=count)
            flips = rng.random(count) < 0.5
            for offset, flip in zip(offsets.tolist(), flips.tolist()):
                crop = view[offset:offset + self.seq_len]
                if n_fraction(crop) > self.max_n_frac:
                    continue
                yield Crop(self.species, key, offset, bool(flip and self.rc_augment), crop)

    def _epoch_items(self, epoch: int) -> Iterator[Crop]:
        rng = np.random.default_rng([self.seed, self.n_slots, self.slot, self.species, epoch, _CROP_SALT])
        size = self.shuffle_buffer
        if size <= 1:
            yield from self._crops(epoch, rng)
            return
        buffer: list[Crop] = []
        for item in self._crops(epoch, rng):
            if len(buffer) < size:
                buffer.append(item)
                continue
            pick = int(rng.integers(size))
            yield buffer[pick]
            buffer[pick] = item
        for pick in rng.permutation(len(buffer)).tolist():
            yield buffer[pick]

    def next(self) -> Crop:
        while True:
            if self._items is None:
                self._items = self._epoch_items(self.epoch)
                counted = self.reader.corrupt
                for _ in range(self.consumed):  # restore: replay this epoch up to the saved point
                    next(self._items)
                self.reader.corrupt = counted  # samples dropped in the replay were counted before the save
            item = next(self._items, None)
            if item is not None:
                self.consumed += 1
                return item
            if self.consumed == 0:  # an endless loop otherwise; one line the launcher prints (exit 2)
                cause = (f"{self.reader.corrupt} samples were dropped as corrupt (data.on_corrupt: skip): reshard "
                         f"the damaged shards" if self.reader.corrupt else
                         f"every crop has more N than data.max_n_frac={self.max_n_frac}: raise it")
                raise ShardError(f"species {self.name}: loader slot {self.slot} has no usable sample in epoch "
                                 f"{self.epoch}; {cause}, or give the species weight 0 in data.mixture")
            self.epoch, self.consumed, self._items = self.epoch + 1, 0, None

    def state_dict(self) -> list[int]:
        return [self.epoch, self.consumed]

    def load_state_dict(self, state: list[int]) -> None:
        self.epoch, self.consumed = int(state[0]), int(state[1])
        self._items = None


class SlotStream:
    """Mixture of the species streams of one slot: crops in a fixed, seeded order.

    The species streams share one ShardReader, whose count of dropped samples (on_corrupt: skip)
    is part of the state, so it survives a resume.
    """

    def __init__(self, manifest: dict, weights: list[float], *, seed: int, slot: int, n_slots: int,
                 seq_len: int, crops_per_window: int, rc_augment: bool, max_n_frac: float, shuffle_buffer: int,
                 reader: ShardReader | None = None):
        self.reader = reader or ShardReader()
        self.streams: list[SpeciesStream] = []
        for species, (name, weight) in enumerate(zip(manifest["species_order"], weights)):
            if weight <= 0:
                continue
            self.streams.append(SpeciesStream(
                name, species, manifest["species"][name]["splits"]["train"]["shards"], seed=seed, slot=slot,
                n_slots=n_slots, seq_len=seq_len, crops_per_window=crops_per_window, rc_augment=rc_augment,
                max_n_frac=max_n_frac, shuffle_buffer=shuffle_buffer, reader=self.reader))
        active = np.array([w for w in weights if w > 0], dtype=np.float64)
        self.cdf = np.cumsum(active / active.sum())  # inverse-CDF pick: one uniform draw per sample
        self.rng = np.random.default_rng([seed, n_slots, slot, _MIX_SALT])

    def next(self) -> Crop:
        pick = min(int(np.searchsorted(self.cdf, self.rng.random(), side="right")), len(self.streams) - 1)
        return self.streams[pick].next()

    def state_dict(self) -> dict:
        return {"mix": self.rng.bit_generator.state, "species": {s.name: s.state_dict() for s in self.streams},
                "corrupt": self.reader.corrupt}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["mix"]
        self.reader.corrupt = int(state.get("corrupt", 0))  # absent in states saved before the count existed
        for stream in self.streams:
            stream.load_state_dict(state["species"][stream.name])
