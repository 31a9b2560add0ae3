"""BERT-style corruption for the mlm objective, as a pure function of (seed, sample, position).

Home: the model's training forward (JanusForPretraining.forward with labels under objective
mlm) calls mlm_corrupt on the batch it was given. Doing it there rather than in the data loader
means every batch source (the real loader, the tests' synthetic streams, a user's own loop) is
masked, so an mlm run can never silently train on unmasked inputs (a copy task).

Determinism without the global RNG: each sample's key is a hash of its token ids and the run's
seed, and each position's random draws are a hash of (key, position). So the mask depends only
on the seed and the sample's content: identical on every rank layout (world size, ep_size,
micro batch, gradient accumulation), after an exact resume, and on CPU and GPU alike (integer
arithmetic only; no device RNG). Two identical samples get the same mask, which is harmless.

The hash is a 32-bit xorshift-multiply mixer. torch has no uint32 arithmetic on every device,
so values live in int64 and each 32-bit product is formed from two 16-bit halves of the
constant: no intermediate reaches 2^63, so nothing depends on signed-overflow behaviour.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from janus_pretrain.tokenizer import A_ID, MASK_ID, T_ID

_LOW32 = 0xFFFFFFFF
_M1, _M2 = 0x7FEB352D, 0x846CA68B  # odd multipliers of a well-mixing 32-bit finaliser
# salts that separate the independent draws made per position
_SELECT, _KIND, _BASE, _SEED = 0x51A7, 0x2B1D, 0x6C35, 0x0E2F


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """(x * constant) mod 2^32 for int64 x in [0, 2^32), without any product above 2^48."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _LOW32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Bijective 32-bit mixer on int64 tensors holding values in [0, 2^32)."""
    x = x & _LOW32
    x = _mul32(x ^ (x >> 16), _M1)
    x = _mul32(x ^ (x >> 15), _M2)
    return x ^ (x >> 16)


def sample_keys(input_ids: torch.Tensor, seed: int) -> torch.Tensor:
    """(B, L) ids -> (B,) int64 keys in [0, 2^32): a hash of every (position, id) of the row and the seed."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.int64)
    per_position = mix32(positions * 64 + input_ids.long())  # (B, L), ids < 64
    row = per_position.sum(dim=1) & _LOW32  # order-sensitive through the position in each term
    seed_word = mix32(torch.tensor((seed * 0x9E37 + _SEED) & _LOW32, dtype=torch.int64, device=input_ids.device))
    return mix32(row ^ seed_word)


def uniform(keys: torch.Tensor, length: int, salt: int) -> torch.Tensor:
    """(B,) keys -> (B, L) float64 in [0, 1), one independent draw per (sample, position, salt)."""
    positions = torch.arange(length, device=keys.device, dtype=torch.int64)
    bits = mix32(mix32(keys ^ salt)[:, None] ^ mix32(positions))  # (B, L)
    return bits.double() / 2.0 ** 32


@dataclass
class Corrupted:
    input_ids: torch.Tensor  # (B, L) ids the model sees
    selected: torch.Tensor  # (B, L) bool: positions whose original base is a target


def mlm_corrupt(input_ids: torch.Tensor, seed: int, probability: float = 0.15, mask_fraction: float = 0.8,
                random_fraction: float = 0.1) -> Corrupted:
    """Choose `probability` of the A/C/G/T positions; of those, mask_fraction become [MASK],
    random_fraction a uniformly drawn base (which may equal the original, as in BERT), the rest stay."""
    ids = input_ids.long()
    keys = sample_keys(ids, seed)  # (B,)
    length = ids.shape[1]
    is_base = (ids >= A_ID) & (ids <= T_ID)
    selected = is_base & (uniform(keys, length, _SELECT) < probability)  # (B, L)
    kind = uniform(keys, length, _KIND)
    to_mask = selected & (kind < mask_fraction)
    to_random = selected & (kind >= mask_fraction) & (kind < mask_fraction + random_fraction)
    random_base = A_ID + (uniform(keys, length, _BASE) * 4).long().clamp(max=3)  # (B, L)
    out = torch.where(to_mask, torch.full_like(ids, MASK_ID), ids)
    out = torch.where(to_random, random_base, out)
    return Corrupted(out.to(input_ids.dtype), selected)


def comb_masks(input_ids: torch.Tensor, passes: int):
    """Evaluation pattern: pass j masks the A/C/G/T positions p with p % passes == j, so every base
    is masked exactly once over the passes. Yields (masked ids, (B, L) bool masked positions)."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    is_base = (input_ids >= A_ID) & (input_ids <= T_ID)
    for j in range(passes):
        chosen = is_base & (positions % passes == j)[None, :]
        yield torch.where(chosen, torch.full_like(input_ids, MASK_ID), input_ids), chosen
