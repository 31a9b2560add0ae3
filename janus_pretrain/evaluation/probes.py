"""Linear models on fixed features: frozen-backbone probes and the k-mer baseline.

Probes embed every sequence once, then fit a linear model on the embeddings. With the backbone frozen, the states of a sequence never change, so embedding it once and
fitting scikit-learn's logistic (or ridge) regression on the cached (N, D) matrix replaces epochs
of forward passes: seconds instead of minutes, and no learning-rate to tune. The regularisation
strength is chosen on the validation rows (the test rows are never looked at).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from janus_pretrain.downstream.embedding import embed_sequence_ids
from janus_pretrain.downstream.task_metrics import compute_metrics
from janus_pretrain.evaluation.task_builder import COMPLEMENT
from janus_pretrain.tokenizer import encode


def embed_sequences(backbone: torch.nn.Module, sequences: list[str], batch_size: int = 64,
                    rc_conjoin: bool = False, device: str | torch.device = "cpu", progress=None,
                    pooling: str = "mean") -> np.ndarray:
    """(N, D) mean-pooled (or (N, L*D) flattened) states of DNA strings (downstream.embedding)."""
    mode = backbone.config.tokenizer
    return embed_sequence_ids(backbone, [encode(s, mode) for s in sequences], batch_size, rc_conjoin, device, progress,
                              pooling)


@dataclass
class ProbeResult:
    valid: dict[str, float]  # metrics on the validation rows (model selection)
    test: dict[str, float]  # metrics on the test rows
    chosen: dict  # hyper-parameters chosen on validation, e.g. {"C": 1.0}


def standardised(model):
    """`model` after a StandardScaler: one grid of C then fits models of any width and any state scale."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), model)


def fit_linear(kind, metrics: list[str], train: tuple[np.ndarray, np.ndarray],
               valid: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
               grid: list[dict], build, selection: str, seed: int = 0, num_classes: int = 0) -> ProbeResult:
    """Fit `build(**params)` for every params in `grid` on train, keep the best on valid by the
    `selection` metric, report it on test; kind.predict (evaluation/kinds/) gives the scored output.
    Shared by the embedding probe and the k-mer baseline."""
    best = None
    for params in grid:
        model = build(**params)
        model.fit(*train)
        score = compute_metrics([selection], kind.predict(model, valid[0], num_classes), valid[1])[selection]
        score = -np.inf if not np.isfinite(score) else score
        if best is None or score > best[0]:
            best = (score, params, model)
    best_score, params, model = best
    result = {name: compute_metrics(metrics, kind.predict(model, x, num_classes), y)
              for name, (x, y) in (("valid", valid), ("test", test))}
    return ProbeResult(result["valid"], result["test"], {**params, "selected_by": selection,
                                                         "valid_score": float(best_score)})


def fit_probe(kind, metrics: list[str], train, valid, test, c_grid: list[float], seed: int = 0,
              num_classes: int = 0) -> ProbeResult:
    """kind.linear_model (logistic or ridge regression) on embeddings, C chosen on valid."""
    return fit_linear(kind, metrics, train, valid, test, [{"c": c} for c in c_grid],
                      lambda c: kind.linear_model(c, seed), kind.selection_metric(metrics), seed, num_classes)


# ---- the k-mer baseline: the model a pretrained network has to beat ----
# k-mer counts (overlapping; k-mers with N not counted; both strands folded together when the task
# RC-conjoins), normalised to frequencies, standardised, then logistic (classification) or ridge
# (regression) regression; k and the L2 strength are chosen on the validation rows. On short motif
# tasks it is often hard to beat.

_TRANSLATE = str.maketrans("acgtRYSWKMBDHVUNryswkmbdhvun", "ACGTNNNNNNNNNNNNNNNNNNNNNNNN")


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
        counts += vectorizer.transform([t.translate(COMPLEMENT)[::-1] for t in texts]).toarray()
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


def kmer_baseline(kind, metrics: list[str], train: tuple[list[str], np.ndarray],
                  valid: tuple[list[str], np.ndarray], test: tuple[list[str], np.ndarray],
                  k_grid: list[int], c_grid: list[float], seed: int = 0, rc_fold: bool = False,
                  num_classes: int = 0) -> ProbeResult:
    """Best (k, C) on validation; metrics on valid and test (kind: a table kind, evaluation/kinds/tables.py)."""
    selection = kind.selection_metric(metrics)
    best: ProbeResult | None = None
    best_score = -np.inf
    for k in k_grid:
        feats = {name: (kmer_features(seqs, k, rc_fold), y) for name, (seqs, y) in
                 (("train", train), ("valid", valid), ("test", test))}
        result = fit_linear(kind, metrics, feats["train"], feats["valid"], feats["test"],
                            [{"c": c} for c in c_grid], lambda c: kind.linear_model(c, seed), selection, seed,
                            num_classes)
        score = result.chosen["valid_score"]
        if best is None or score > best_score:
            best, best_score = ProbeResult(result.valid, result.test, {"k": k, **result.chosen}), score
    return best
