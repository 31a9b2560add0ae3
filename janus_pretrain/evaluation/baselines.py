"""Baselines that need no pretraining, run in the same evaluation as the model.

k-mer: counts of every k-mer (overlapping, both strands folded together only when the task asks
for RC conjoining), normalised to frequencies, standardised, then logistic (classification) or
ridge (regression) regression; k and the L2 strength are chosen on the validation rows. This is
the model a pretrained network has to beat: on short motif tasks it is often hard to beat.
"""
from __future__ import annotations

import numpy as np

from janus_pretrain.evaluation.probes import ProbeResult, _make, fit_linear, selection_metric

_TRANSLATE = str.maketrans("acgtRYSWKMBDHVUNryswkmbdhvun", "ACGTNNNNNNNNNNNNNNNNNNNNNNNN")
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def _clean(sequence: str) -> str:
    return sequence.translate(_TRANSLATE)


def kmer_features(sequences: list[str], k: int, rc_fold: bool = False) -> np.ndarray:
    """(N, 4^k) k-mer frequencies; k-mers containing N are not counted. rc_fold adds the counts of
    the reverse complement, so the features are strand symmetric."""
    from sklearn.feature_extraction.text import CountVectorizer

    vocabulary = {"".join("ACGT"[(i >> (2 * (k - 1 - j))) & 3] for j in range(k)): i for i in range(4 ** k)}
    # a fixed vocabulary: every split gets the same columns, and no fitting happens here
    vectorizer = CountVectorizer(analyzer="char", ngram_range=(k, k), lowercase=False, vocabulary=vocabulary)
    texts = [_clean(s) for s in sequences]
    counts = vectorizer.transform(texts).toarray().astype(np.float32)
    if rc_fold:
        counts += vectorizer.transform([t.translate(_COMPLEMENT)[::-1] for t in texts]).toarray()
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


def kmer_baseline(kind: str, metrics: list[str], train: tuple[list[str], np.ndarray],
                  valid: tuple[list[str], np.ndarray], test: tuple[list[str], np.ndarray],
                  k_grid: list[int], c_grid: list[float], seed: int = 0, rc_fold: bool = False,
                  num_classes: int = 0) -> ProbeResult:
    """Best (k, C) on validation; metrics on valid and test."""
    selection = selection_metric(kind, metrics)
    best: ProbeResult | None = None
    best_score = -np.inf
    for k in k_grid:
        feats = {name: (kmer_features(seqs, k, rc_fold), y) for name, (seqs, y) in
                 (("train", train), ("valid", valid), ("test", test))}
        result = fit_linear(kind, metrics, feats["train"], feats["valid"], feats["test"],
                            [{"c": c} for c in c_grid], lambda c: _make(kind, c, seed), selection, seed, num_classes)
        score = result.chosen["valid_score"]
        if best is None or score > best_score:
            best, best_score = ProbeResult(result.valid, result.test, {"k": k, **result.chosen}), score
    return best
