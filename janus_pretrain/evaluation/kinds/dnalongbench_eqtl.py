"""kind: dnalongbench_eqtl. One GTEx tissue of the DNALongBench eQTL benchmark: does a variant
change its gene's expression? Each record's window runs from the gene's TSS to the variant
(benchmarks/eqtl_windows.py: masking, REF check, skips counted and printed), 450 kbp or --window-bp.

Two heads, both finetuned end to end with the official eQTL recipe (official.EQTL_PROTOCOL: lr,
batch, epochs, the state after the last epoch is tested), for the pretrained model and its
random-init twin:
  alt                the official head: mean-pooled states of the alt window, linear; at test the
                     logits of the alt window and of its reverse complement averaged; AUROC
  alt_ref_difference beyond the paper: the head reads [pooled alt, pooled alt - pooled ref], the
                     reference window run through the same backbone (twice the compute), both
                     strands averaged at test likewise
The task's result is the official head; results.json's "heads" sets the two side by side per seed
(difference minus alt, paired by seed). The k-mer baseline reads the alt allele in its flanked
region window (about 1 kbp, eqtl_windows.variant_region): the whole window's k-mer frequencies
hardly move with one variant. The task's root defaults to the data root itself (the eQTL
directory holding config/gtex_hg38.<tissue>.config); the task name is the tissue.
"""
from __future__ import annotations

import copy
import dataclasses
import sys

import numpy as np
import torch
from tqdm import tqdm

from janus_pretrain.cli import step_bar
from janus_pretrain.downstream.classification import AlleleDifferenceClassifier, ViewClassifier, predict_logits
from janus_pretrain.downstream.finetune import FinetuneOptions, train_classifier
from janus_pretrain.downstream.task_metrics import compute_metrics
from janus_pretrain.evaluation.benchmarks.eqtl_files import config_path, read_eqtl_config
from janus_pretrain.evaluation.benchmarks.eqtl_windows import EqtlSubset, load_eqtl_subset, variant_region
from janus_pretrain.evaluation.benchmarks.official import EQTL_PROTOCOL
from janus_pretrain.evaluation.benchmarks.protocol import mean_std, reverse_complement
from janus_pretrain.evaluation.kinds.base import EvaluationError, Fold, TaskData, TaskKind, seeded_rows
from janus_pretrain.evaluation.kinds.sequence_benchmark import check_benchmark_entry, extend_seeds
from janus_pretrain.evaluation.probes import kmer_baseline
from janus_pretrain.tokenizer import encode_numpy

SUBSETS = ("train", "valid", "test")
HEADS = ("alt", "alt_ref_difference")  # the first is the official head and the task's result
OFFICIAL_HEAD = HEADS[0]


class WindowInputs:
    """Model inputs of some records of a subset, built on demand (450 kbp windows do not all fit in
    memory): item i is the (V, L) ids of the views `views(window)` names, or (L,) for one view."""

    def __init__(self, subset: EqtlSubset, rows: list[int], views, mode: str):
        self.subset, self.rows, self.views, self.mode = subset, rows, views, mode

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> list[int]:
        return [self.subset.plans.spec.length] * len(self.rows)  # every window is cut or padded to it

    def __getitem__(self, i: int) -> torch.Tensor:
        ids = [torch.from_numpy(encode_numpy(v, self.mode)) for v in self.views(self.subset.window(self.rows[i]))]
        return ids[0] if len(ids) == 1 else torch.stack(ids)


def _train_views(head: str):
    return (lambda w: [w.alt]) if head == "alt" else (lambda w: [w.ref, w.alt])


def _test_views(head: str):  # both strands, the reverse complement of the whole (fitted) window
    if head == "alt":
        return lambda w: [w.alt, reverse_complement(w.alt)]
    return lambda w: [w.ref, w.alt, reverse_complement(w.ref), reverse_complement(w.alt)]


class DnalongbenchEqtl(TaskKind):
    name = "dnalongbench_eqtl"
    roles = ()
    reads_data_root = True
    metrics = ("auroc",)
    default_metrics = metrics

    # ---- the suite entry ----
    def check(self, spec, recipe, key: str, where) -> list[str]:
        check_benchmark_entry(spec, key, where)
        return []

    def default_root(self, spec) -> str:
        return "."

    def data_files(self, spec, root) -> dict:
        config = read_eqtl_config(config_path(root, spec.name))
        files = {"config": config.path, "eqtl_table": config.eqtl_file, "regions": config.tabix_file,
                 "regions_index": config.tabix_file.with_name(config.tabix_file.name + ".tbi"), "genome": config.genome_fa}
        for role, path in files.items():
            if not path.is_file():
                raise ValueError(f"{config.path}: its {role} file {path} does not exist")
        return files

    def run_seeds(self, task, count: int | None) -> list[int]:
        return extend_seeds((EQTL_PROTOCOL.seed,), count)

    def protocol_line(self, task) -> str:
        p, scaled = EQTL_PROTOCOL, "" if task.scale.is_full() else " (scaled down)"
        return (f"official eQTL protocol{scaled}: {task.scale.window_bp or 'config'} bp windows, alt head, lr {p.lr:g}, "
                f"batch {p.global_batch}, {task.scale.epochs or p.epochs} epochs, last state tested with both strands; "
                f"the ref-vs-alt difference head beside it")

    # ---- reading ----
    def load(self, task) -> TaskData:
        config = read_eqtl_config(config_path(task.data_dir, task.name))
        subsets = {s: load_eqtl_subset(config, s, task.scale.window_bp or None) for s in SUBSETS}
        for subset in subsets.values():
            tqdm.write(f"{task.name}: {subset.plans.counts.line()}", file=sys.stderr)
        limits = {"train": task.scale.max_train, "valid": 0, "test": task.scale.max_test}
        rows = {}
        for s, subset in subsets.items():
            kept = seeded_rows(len(subset), limits[s], 0)
            rows[s] = list(range(len(subset))) if kept is None else kept
            if not rows[s]:
                raise EvaluationError(f"task {task.name}: no {s} record kept ({subset.plans.counts.line()})")
        parts = [((subsets[s], rows[s]), np.array([subsets[s].plans.plans[i].record.label for i in rows[s]]))
                 for s in SUBSETS]
        counts = {s: len(rows[s]) for s in SUBSETS}
        return TaskData([Fold(*parts)], ["negative", "positive"],
                        {**counts, "folds": 1, "window_bp": subsets["train"].plans.spec.length,
                         "windows": {s: subsets[s].plans.counts.as_dict() for s in SUBSETS}})

    # ---- running ----
    def deterministic(self, model: str, recipe) -> bool:
        return model == "kmer"

    def run(self, runner, task, data: TaskData, model: str, seed, bar=None) -> list[dict]:
        fold = data.folds[0]
        if model == "kmer":
            return [self._kmer(task, fold)]
        return [self._finetune(runner, task, model, seed, fold, head, bar) for head in HEADS]

    def _kmer(self, task, fold: Fold) -> dict:
        from janus_pretrain.evaluation.kinds import KINDS

        def regions(part):
            (subset, rows), target = part
            return [variant_region(subset.plans.plans[i], subset.genome, subset.plans.spec) for i in rows], target
        r = task.recipe
        try:
            result = kmer_baseline(KINDS["classification"], task.metrics, regions(fold.train), regions(fold.valid),
                                   regions(fold.test), r.kmer_k, r.probe_c, 0, True, 2)
        except ValueError as exc:
            raise EvaluationError(f"task {task.name}: k-mer baseline: {exc}") from None
        return {"valid": result.valid, "test": result.test, "chosen": {**result.chosen, "input": "variant region"}}

    def _finetune(self, runner, task, model_name: str, seed: int, fold: Fold, head: str, bar) -> dict:
        p = EQTL_PROTOCOL
        epochs = task.scale.epochs or p.epochs
        options = FinetuneOptions(epochs=epochs, batch_size=p.global_batch, lr=p.lr, weight_decay=p.weight_decay,
                                  patience=epochs + 1, warmup_fraction=p.warmup_fraction, lr_floor=p.lr_floor, seed=seed)
        backbone = copy.deepcopy(runner.model_for(model_name, seed).backbone)
        mode = backbone.config.tokenizer
        torch.manual_seed(seed)
        model = ViewClassifier(backbone, 2) if head == "alt" else AlleleDifferenceClassifier(backbone, 2)

        def inputs(part, views):
            (subset, rows), _ = part
            return WindowInputs(subset, rows, views, mode)
        valid_ids, test_ids = inputs(fold.valid, _test_views(head)), inputs(fold.test, _test_views(head))
        _, history = train_classifier(model, inputs(fold.train, _train_views(head)), fold.train[1].tolist(), valid_ids,
                                      fold.valid[1].tolist(), options, log=lambda *_: None, progress=step_bar(bar),
                                      selection="auroc", restore="last")
        out = {split: compute_metrics(task.metrics, predict_logits(model, ids, p.global_batch).numpy(), part[1])
               for split, ids, part in (("valid", valid_ids, fold.valid), ("test", test_ids, fold.test))}
        return {**out, "head": head, "chosen": {"head": head, "lr": p.lr, "batch_size": p.global_batch, "epochs": epochs,
                                                "state": "last epoch"}, "history": history}

    def finalise(self, task, runs: list[dict]) -> tuple[list[dict], dict]:
        """The official head's runs are the result; both heads side by side per model in "heads"."""
        kept, heads = [], {}
        for model in dict.fromkeys(run["model"] for run in runs):
            members = [run for run in runs if run["model"] == model]
            if "head" not in members[0]:
                kept += members
                continue
            kept += [{**run, "fold": 0} for run in members if run["head"] == OFFICIAL_HEAD]
            by_head = {h: {run["seed"]: run["test"]["auroc"] for run in members if run["head"] == h} for h in HEADS}
            seeds = sorted(by_head[OFFICIAL_HEAD])
            heads[model] = {h: dataclasses.asdict(mean_std([by_head[h][s] for s in seeds])) for h in HEADS}
            heads[model]["difference_minus_alt"] = dataclasses.asdict(
                mean_std([by_head[HEADS[1]][s] - by_head[OFFICIAL_HEAD][s] for s in seeds]))
        return kept, {"heads": heads, "head_runs": [run for run in runs if run.get("head") == HEADS[1]]}

    # ---- probes during pretraining ----
    def probe_data(self, task, limit: int):
        raise EvaluationError(f"task {task.name}: a {self.name} task finetunes on 450 kbp windows; it is not a "
                              f"pretraining probe (run it with janus evaluate)")
