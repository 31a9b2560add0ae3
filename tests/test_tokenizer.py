"""Tokenizer properties: Caduceus-compatible ids, case, IUPAC to N, clear errors, reverse complement."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from janus_pretrain import tokenizer as tok

COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def random_text(n: int, seed: int, alphabet: str = "ACGTNacgtn") -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_ids_match_the_caduceus_vocabulary():
    # downstream Caduceus/JanusDNA tooling indexes embeddings by these ids
    assert tok.SPECIAL_TOKENS == ["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]"]
    assert tok.encode("ACGTN").tolist() == [tok.A_ID, tok.C_ID, tok.G_ID, tok.T_ID, tok.N_ID] == [7, 8, 9, 10, 11]
    assert tok.PAD_ID == 4 and tok.VOCAB_SIZE == 16


def test_lower_case_maps_to_upper_case_ids_and_decode_round_trips():
    text = random_text(5000, 1)
    assert torch.equal(tok.encode(text), tok.encode(text.upper()))
    assert tok.decode(tok.encode(text)) == text.upper()
    assert tok.encode(text).dtype == torch.long


@pytest.mark.parametrize("code", list(tok.IUPAC_AMBIGUOUS + tok.IUPAC_AMBIGUOUS.lower()))
def test_iupac_ambiguity_codes_become_n(code):
    assert tok.encode("A" + code + "T").tolist() == [tok.A_ID, tok.N_ID, tok.T_ID]
    normalised = tok.normalise_bases(("ac" + code + "GT").encode())
    assert normalised == b"ac" + (b"n" if code.islower() else b"N") + b"GT"


@pytest.mark.parametrize("char", list("0123456789*-. >X\t"))
def test_invalid_character_error_names_character_and_position(char):
    text = random_text(300, 2)
    pos = 137
    bad = text[:pos] + char + text[pos + 1:]
    with pytest.raises(tok.TokenizerError) as info:
        tok.encode(bad)
    assert repr(char) in str(info.value) and f"position {pos}" in str(info.value)
    assert tok.first_invalid(bad) == (pos, char)
    assert tok.first_invalid(text) is None


def test_non_ascii_input_is_a_clear_error():
    with pytest.raises(tok.TokenizerError, match="position 2"):
        tok.encode("AC\u00e9GT")


def test_reverse_complement_is_an_involution_and_the_true_complement():
    text = random_text(2000, 3, "ACGTN")
    ids = tok.encode(text)
    expected = tok.encode(text.translate(COMPLEMENT)[::-1])
    assert torch.equal(tok.reverse_complement(ids), expected)
    batch = torch.randint(0, tok.VOCAB_SIZE, (3, 257))  # specials too
    assert torch.equal(tok.reverse_complement(tok.reverse_complement(batch)), batch)
    assert torch.equal(tok.reverse_complement(batch)[:, 0], tok.reverse_complement(batch[:, -1:])[:, 0])
    specials = torch.arange(7)
    assert torch.equal(tok.reverse_complement(specials), specials.flip(0))  # specials keep their id


def test_soft_mask_marks_exactly_the_lower_case_bases():
    text = random_text(4000, 4, "ACGTNacgtnRy")
    assert tok.soft_mask(text.encode()).tolist() == [c.islower() for c in text]


def test_one_megabase_is_encoded_correctly_in_one_vectorised_call():
    text = random_text(1 << 20, 5, "ACGTNacgtnRYKM")
    table = {c: i for c, i in zip("ACGTN", (7, 8, 9, 10, 11))}
    reference = np.array([table.get(c.upper(), tok.N_ID) for c in text], dtype=np.int64)
    for form in (text, text.encode(), np.frombuffer(text.encode(), dtype=np.uint8)):
        ids = tok.encode_numpy(form)
        assert ids.shape == (1 << 20,) and np.array_equal(ids, reference)
