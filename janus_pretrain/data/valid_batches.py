"""Deterministic validation batches: the whole valid split of each species once, split over ranks.

Each window is tiled into consecutive seq_len crops (the last one shorter, padded), no
reverse complement, no shuffling. Crop c of a species goes to rank c % world. Every rank yields
the same number of batches per species (rows past the end are padding with loss weight 0), so
collective ops in the model (expert-parallel all-to-all) stay in step across ranks.
"""
from __future__ import annotations

from typing import Iterator

import torch

from janus_pretrain.config import DataConfig
from janus_pretrain.data.loader import TokenEncoding, encode_crops
from janus_pretrain.data.manifest import mixture_weights, read_manifest
from janus_pretrain.data.samples import Crop
from janus_pretrain.data.shard_integrity import ShardReader
from janus_pretrain.tokenizer import PAD_ID


def _tiles(species: int, shards: list[dict], seq_len: int, reader: ShardReader) -> Iterator[Crop]:
    for window in reader.windows(shards):
        if window is None:  # dropped under data.on_corrupt: skip (the reader logged it)
            continue
        key, dna = window
        view = memoryview(dna)
        for offset in range(0, len(dna), seq_len):
            yield Crop(species, key, offset, False, view[offset:offset + seq_len])


def _padding(species: int, rows: int, seq_len: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.full((rows, seq_len), PAD_ID, dtype=torch.long),
            "species": torch.full((rows,), species, dtype=torch.long),
            "loss_weight": torch.zeros(rows, seq_len, dtype=torch.float32)}


def validation_batches(config: DataConfig, micro_batch: int, rank: int = 0, world_size: int = 1,
                       split: str = "valid", encoding: TokenEncoding = TokenEncoding()
                       ) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """(species name, batch) over the split of every species in the run's mixture, manifest order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
    manifest = read_manifest(config.manifest)
    weights = mixture_weights(manifest, config.mixture)
    seq_len = config.seq_len
    reader = ShardReader(config.verify_shards, config.on_corrupt)  # hashes each shard once per call
    for species, (name, weight) in enumerate(zip(manifest["species_order"], weights)):
        shards = [s for s in manifest["species"][name]["splits"][split]["shards"] if s["samples"] > 0]
        if weight <= 0 or not shards:
            continue
        total = sum(1 for _ in _tiles(species, shards, seq_len, reader))  # counting pass: reads, no tokenising
        n_batches = -(-(-(-total // world_size)) // micro_batch)
        if config.valid_max_batches > 0:
            n_batches = min(n_batches, config.valid_max_batches)
        tiles = _tiles(species, shards, seq_len, reader)
        mine = (crop for index, crop in enumerate(tiles) if index % world_size == rank)
        for _ in range(n_batches):
            crops = [crop for _, crop in zip(range(micro_batch), mine)]
            batch = encode_crops(crops, seq_len, config.repeat_weight, encoding) if crops else _padding(species, 0, seq_len)
            if len(crops) < micro_batch:
                pad = _padding(species, micro_batch - len(crops), seq_len)
                batch = {k: torch.cat([batch[k], pad[k]]) for k in batch}
            yield name, batch
