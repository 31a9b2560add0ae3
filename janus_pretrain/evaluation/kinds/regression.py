"""kind: regression. Sequences with a numeric label; a ridge-regression probe on embeddings (no
finetuning head), the k-mer baseline, Spearman / Pearson correlation."""
from __future__ import annotations

import numpy as np

from janus_pretrain.config_schema import ConfigError
from janus_pretrain.evaluation.kinds.tables import TableKind
from janus_pretrain.evaluation.probes import standardised
from janus_pretrain.evaluation.readers import regression_targets


class Regression(TableKind):
    name = "regression"
    metrics = ("spearman", "pearson")
    default_metrics = metrics
    selection_order = ("spearman", "pearson")

    def check(self, spec, recipe, key: str, where) -> list[str]:
        if recipe.head == "finetune":
            raise ConfigError(f"{where}: '{key}.recipe.head' finetune trains a classification head; use head "
                              f"'probe' (ridge regression on embeddings) for regression tasks")
        return super().check(spec, recipe, key, where)

    def targets(self, task, table, classes: list[str]) -> np.ndarray:
        return regression_targets(table, task.spec.label_column)

    def linear_model(self, c: float, seed: int):
        from sklearn.linear_model import Ridge

        return standardised(Ridge(alpha=1.0 / c))

    def predict(self, model, x: np.ndarray, num_classes: int) -> np.ndarray:
        return model.predict(x)
