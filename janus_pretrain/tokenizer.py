"""Character-level DNA tokenizer with Caduceus/JanusDNA-compatible ids.

[CLS]0 [SEP]1 [BOS]2 [MASK]3 [PAD]4 [RESERVED]5 [UNK]6 A7 C8 G9 T10 N11, vocabulary padded to 16.
Encoding is one table lookup over the bytes, never a Python loop per base. Three mappings of
letters to ids (`mode`, recorded as model.tokenizer in configs and exports):

  janus          A/C/G/T either case -> 7-10; N and IUPAC codes either case -> N 11 (models trained here)
  janusdna       the official JanusDNA pretraining path (CaduceusTokenizer, which upper-cases, then
                 N replaced by [PAD]): A/C/G/T either case -> 7-10, N/n -> [PAD] 4, other IUPAC -> [UNK] 6
  janusdna_char  the official benchmark loaders (CharacterTokenizer of A C G T N, case-sensitive):
                 A C G T N -> 7-11, lower case and other IUPAC -> [UNK] 6

Every mode accepts the same letters (A C G T N and IUPAC codes, either case) and refuses the rest.
"""
from __future__ import annotations

import numpy as np
import torch

TOKENIZER_VERSION = "janus-char-v1"
SPECIAL_TOKENS = ["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]"]
CLS_ID, SEP_ID, BOS_ID, MASK_ID, PAD_ID, RESERVED_ID, UNK_ID = range(7)
A_ID, C_ID, G_ID, T_ID, N_ID = 7, 8, 9, 10, 11
VOCAB_SIZE = 16  # padded for tensor-core friendly embedding shapes
BASE_IDS = (A_ID, C_ID, G_ID, T_ID)
IUPAC_AMBIGUOUS = "RYSWKMBDHVUN"  # U is not DNA; treated as unknown base like the other codes
NUCLEOTIDE_CODES = "ACGT" + IUPAC_AMBIGUOUS  # every letter accepted in sequences, in either case

TOKENIZER_MODES = ("janus", "janusdna", "janusdna_char")

_INVALID = -1


def _table(mode: str) -> np.ndarray:
    table = np.full(256, _INVALID, dtype=np.int64)
    for char in NUCLEOTIDE_CODES:
        upper, lower = ord(char), ord(char.lower())
        base = BASE_IDS["ACGT".index(char)] if char in "ACGT" else None
        if mode == "janus":
            table[upper] = table[lower] = base if base is not None else N_ID
        elif mode == "janusdna":
            table[upper] = table[lower] = base if base is not None else PAD_ID if char == "N" else UNK_ID
        else:  # janusdna_char
            table[upper] = base if base is not None else N_ID if char == "N" else UNK_ID
            table[lower] = UNK_ID
    return table


_TABLES = {mode: _table(mode) for mode in TOKENIZER_MODES}
_ENCODE = _TABLES["janus"]

_DECODE = np.array([ord("?")] * VOCAB_SIZE, dtype=np.uint8)
for _char, _id in zip("ACGTN", (*BASE_IDS, N_ID)):
    _DECODE[_id] = ord(_char)

# complement on ids: A<->T, C<->G, everything else (N, specials) to itself
COMPLEMENT_IDS = np.arange(VOCAB_SIZE, dtype=np.int64)
COMPLEMENT_IDS[[A_ID, T_ID, C_ID, G_ID]] = T_ID, A_ID, G_ID, C_ID
_COMPLEMENT = torch.from_numpy(COMPLEMENT_IDS)

# ASCII-level normalisation for shards: IUPAC ambiguity codes to N/n, case kept; a bytes.translate
# table because shard writing runs it over every base of a genome
_NORMALISE = bytes.maketrans((IUPAC_AMBIGUOUS + IUPAC_AMBIGUOUS.lower()).encode(),
                             b"N" * len(IUPAC_AMBIGUOUS) + b"n" * len(IUPAC_AMBIGUOUS))


class TokenizerError(ValueError):
    """Input that is not DNA: the message names the character and its position."""


def _as_bytes(seq: str | bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(seq, str):
        try:
            seq = seq.encode("ascii")
        except UnicodeEncodeError as exc:
            raise TokenizerError(f"non-ASCII character {seq[exc.start]!r} at position {exc.start}") from None
    if isinstance(seq, np.ndarray):
        return seq.astype(np.uint8, copy=False)
    return np.frombuffer(bytes(seq), dtype=np.uint8)


def first_invalid(seq: str | bytes) -> tuple[int, str] | None:
    """Position and character of the first byte that is not a DNA/IUPAC letter, or None."""
    codes = _ENCODE[_as_bytes(seq)]
    bad = np.flatnonzero(codes == _INVALID)
    if bad.size == 0:
        return None
    pos = int(bad[0])
    return pos, chr(_as_bytes(seq)[pos])


def encode_numpy(seq: str | bytes | np.ndarray, mode: str = "janus") -> np.ndarray:
    """Token ids as an int64 numpy array (used by the data pipeline); `mode` one of TOKENIZER_MODES."""
    raw = _as_bytes(seq)
    try:
        ids = _TABLES[mode][raw]
    except KeyError:
        raise TokenizerError(f"unknown tokenizer mode {mode!r}; expected one of {', '.join(TOKENIZER_MODES)}") from None
    if ids.size and ids.min() == _INVALID:
        pos = int(np.flatnonzero(ids == _INVALID)[0])
        raise TokenizerError(f"invalid DNA character {chr(raw[pos])!r} at position {pos}; "
                             f"expected A, C, G, T, N or an IUPAC code (either case)")
    return ids


def encode(seq: str | bytes, mode: str = "janus") -> torch.LongTensor:
    """DNA text to token ids (L,); janus mode: lower case to the same ids, IUPAC codes to N."""
    return torch.from_numpy(encode_numpy(seq, mode))


def decode(ids: torch.Tensor | np.ndarray | list[int]) -> str:
    """Token ids to upper-case DNA; special ids decode to '?'."""
    array = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
    if array.size and (array.min() < 0 or array.max() >= VOCAB_SIZE):
        raise TokenizerError(f"token id outside [0, {VOCAB_SIZE}) in decode input")
    return _DECODE[array].tobytes().decode("ascii")


def reverse_complement(ids: torch.Tensor) -> torch.Tensor:
    """Reverse complement along the last dimension, on ids."""
    return _COMPLEMENT.to(ids.device)[ids].flip(-1)


def normalise_bases(raw: bytes | np.ndarray) -> bytes:
    """Map IUPAC ambiguity codes to N (n when lower case), keep case; for shard writing."""
    return (raw.tobytes() if isinstance(raw, np.ndarray) else bytes(raw)).translate(_NORMALISE)


def soft_mask(raw: bytes | np.ndarray) -> np.ndarray:
    """Boolean mask of lower-case (soft-masked repeat) bases."""
    array = _as_bytes(raw)
    return (array >= ord("a")) & (array <= ord("z"))
