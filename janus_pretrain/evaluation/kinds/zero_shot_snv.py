"""kind: zero_shot_snv. Single-base variants with a 0/1 label (1 = expected deleterious), scored
without training: the model's log P(alt) - log P(ref) at the variant in its reference window
(downstream/variants.py), negated so that a higher score means label 1; AUROC. No k-mer analogue."""
from __future__ import annotations

import numpy as np

from janus_pretrain.downstream.task_metrics import compute_metrics
from janus_pretrain.downstream.variants import score_variants
from janus_pretrain.evaluation.kinds.base import EvaluationError, Fold, TaskData, TaskKind
from janus_pretrain.evaluation.readers import read_snv_task

NO_INPUTS = ([], np.zeros(0))


class ZeroShotSNV(TaskKind):
    name = "zero_shot_snv"
    roles = ("variants", "fasta")
    metrics = ("auroc",)
    default_metrics = metrics

    def check(self, spec, recipe, key: str, where) -> list[str]:
        return ["variants", "fasta"]

    def load(self, task) -> TaskData:
        """One fold whose test split holds every variant (nothing is trained)."""
        variants, labels = read_snv_task(task.files["variants"], task.spec.label_column)
        return TaskData([Fold(NO_INPUTS, NO_INPUTS, (variants, labels))])

    def not_applicable(self, model: str) -> str | None:
        if model == "kmer":
            return "zero-shot tasks score variants with the model's own likelihood; no k-mer analogue"
        return None

    def deterministic(self, model: str, recipe) -> bool:
        return model == "pretrained"

    def run(self, runner, task, data: TaskData, model: str, seed, bar=None) -> list[dict]:
        variants, labels = data.folds[0].test
        return [{"test": self.score(task, runner.model_for(model, seed), variants, labels), "valid": {},
                 "chosen": {"window": self.window(task)}}]

    def window(self, task) -> int:
        return task.scale.window_bp or task.recipe.window

    def score(self, task, model, variants, labels, device="cpu") -> dict[str, float]:
        """The task's metrics of `model` (JanusForPretraining, janus objective) on `variants`."""
        rows = score_variants(model, task.files["fasta"], variants, self.window(task), task.recipe.batch_size,
                              device, on_ref_mismatch="error")
        bad = [(v, r["status"]) for v, r in zip(variants, rows) if r["status"] != "ok"]
        if bad:
            raise EvaluationError(f"task {task.name}: {len(bad)} variants cannot be scored, first {bad[0][0].where}: "
                                  f"{bad[0][1]}; a zero-shot SNV task takes single-base A/C/G/T substitutions only")
        score = -np.array([r["score"] for r in rows])  # label 1 = deleterious = low log P(alt) - log P(ref)
        return compute_metrics(task.metrics, score, labels)

    def probe_data(self, task, limit: int):
        return self.load(task).folds[0].test  # every variant: the task is small and nothing is fitted

    def probe(self, task, data, module, device, is_main: bool) -> dict[str, float]:
        if module.config.objective != "janus":
            return {}  # defined for the janus read-out only (score_variants refuses mlm/clm): no probe value
        return self.score(task, module, *data, device=device)
