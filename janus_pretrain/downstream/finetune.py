"""Finetune an exported backbone for sequence classification (launch/finetune.py).

AdamW with linear warm-up then cosine decay; validation after every epoch (or every
`eval_every` steps); the best validation state (accuracy, ties broken by loss) is kept and
restored; early stopping after `patience` evaluations without improvement. The result directory
holds classifier.safetensors + classifier.json (loadable with load_classifier) and metrics.json.
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from janus_pretrain.atomic_io import atomic_write_text, temporary_path
from janus_pretrain.config import model_config_from_dict
from janus_pretrain.downstream.classification import (SequenceClassifier, encode_all, input_lengths, length_batches,
                                                     predict_logits)
from janus_pretrain.downstream.task_metrics import classification_metrics
from janus_pretrain.downstream.tsv import encode_labels, read_labelled_tsv, split_valid
from janus_pretrain.export import ExportError, load_backbone, read_export_config
from janus_pretrain.lr_schedule import warmup_cosine
from janus_pretrain.model import JanusModel


@dataclass
class FinetuneSettings:
    """How a head (and the backbone) are finetuned: the settings `janus finetune` and an evaluation
    suite's recipe share (evaluation/registry.py's Recipe extends them with the suite's own keys)."""
    epochs: int = 10  # passes over the training set (upper bound; early stopping may end sooner)
    max_steps: int = 0  # optimizer steps in all; 0 = epochs x batches per epoch
    batch_size: int = 32  # sequences per step (and per embedding batch)
    lr: float = 3e-3  # peak AdamW learning rate (backbone and head); best of the splice runs in docs/downstream.md
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    patience: int = 3  # evaluations without validation improvement before stopping
    eval_every: int = 0  # steps between validations; 0 = once per epoch
    rc_conjoin: bool = False  # average over both strands (finetune logits; probe embeddings)
    pooling: Literal["mean", "flatten"] = "mean"  # head input: mean of position states, or all states concatenated (fixed-length inputs only)
    dropout: float = 0.0  # dropout on the pooled state


@dataclass
class FinetuneOptions(FinetuneSettings):
    """One `janus finetune` job: the shared settings, and how this job reads its tables and seeds itself."""
    warmup_fraction: float = 0.1  # linear warm-up over this fraction of the steps, then cosine down to lr_floor
    lr_floor: float = 0.0  # where the cosine ends, as a fraction of the peak lr (the NT/GB protocols: 0.1)
    freeze_backbone: bool = False  # train the head only (linear probe)
    seed: int = 0  # seeds the head init, batch order and (without --valid) the validation split
    valid_fraction: float = 0.1  # without --valid: share of the training rows held out for validation
    sequence_column: str = "sequence"
    label_column: str = "label"

    @classmethod
    def of(cls, settings: FinetuneSettings, **rest) -> "FinetuneOptions":
        """The options of a job run with `settings` (e.g. a suite recipe), the other fields from `rest`."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(FinetuneSettings)}, **rest)


def _better(candidate: dict, best: dict | None, selection: str) -> bool:
    if best is None:
        return True
    return (candidate[selection], -candidate["loss"]) > (best[selection], -best["loss"])


def _valid_metrics(logits: torch.Tensor, target: list[int], selection: str) -> dict[str, float]:
    """classification_metrics, plus the selection metric when it is another task_metrics name (e.g. f1_binary)."""
    metrics = classification_metrics(logits, torch.tensor(target))
    if selection not in metrics:
        from janus_pretrain.downstream.task_metrics import compute_metrics

        metrics.update(compute_metrics([selection], logits.numpy(), torch.tensor(target).numpy()))
    return metrics



class _CachedHead:
    """Frozen backbone + mean pooling: the pooled states never change, so they are computed once
    (both strands when RC conjoining: the head is linear, so averaging logits over strands equals
    the head of the averaged states) and every step trains the head alone on the cache."""

    def __init__(self, model: SequenceClassifier, train_ids, valid_ids, batch_size: int):
        from janus_pretrain.downstream.embedding import embed_sequence_ids

        self.model = model
        self.train = torch.from_numpy(embed_sequence_ids(model.backbone, train_ids, batch_size, model.rc_conjoin))
        self.valid = torch.from_numpy(embed_sequence_ids(model.backbone, valid_ids, batch_size, model.rc_conjoin))

    def forward(self, batch: list[int]):
        return self.model.head(self.model.dropout(self.train[batch])), None  # (B, C), no MoE in the loop

    def predict_valid(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model.head(self.valid).float()


def train_classifier(model: SequenceClassifier, train_ids, train_y, valid_ids, valid_y,
                     options: FinetuneOptions, log=print, progress=None, selection: str = "accuracy",
                     epoch_inputs=None, restore: str = "best") -> tuple[dict, list[dict]]:
    """Train in place; restores the best validation state. Returns (best valid metrics, history).

    History records carry the task loss (cross-entropy) and the MoE load-balancing loss apart:
    their sum is what is optimised, but only the first says how well the task is learnt.
    `progress(step, total)` is called after every optimizer step (a tqdm bar in the harness).
    The benchmark protocols (evaluation/kinds/) set: `selection`, the validation metric (a
    task_metrics name) that picks the best state, ties broken by loss; `epoch_inputs(epoch)`, the
    training inputs of that epoch in train_ids' order (a random strand per example), default
    train_ids every epoch; `restore` "last" keeps the final state instead of the best one."""
    if restore not in ("best", "last"):
        raise ValueError(f"restore must be 'best' or 'last', not {restore!r}")
    torch.manual_seed(options.seed)
    if options.freeze_backbone:
        model.backbone.requires_grad_(False)
    cached = _CachedHead(model, train_ids, valid_ids, options.batch_size) \
        if options.freeze_backbone and model.pooling == "mean" else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    train_lengths = input_lengths(train_ids)
    per_epoch = len(length_batches(train_lengths, options.batch_size))
    total = options.max_steps or options.epochs * per_epoch
    warmup = max(1, int(options.warmup_fraction * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup, options.lr_floor))
    eval_every = options.eval_every or per_epoch
    targets = torch.tensor(train_y)
    aux_coef = model.backbone.config.router_aux_loss_coef
    best, best_state, history, stale, step, epoch = None, None, [], 0, 0, 0
    interval = torch.zeros(3, dtype=torch.float64)  # task loss sum, aux loss sum, steps since the last validation
    started = time.time()
    while step < total and stale < options.patience:
        batches = length_batches(train_lengths, options.batch_size, shuffle=True, seed=options.seed + epoch)
        inputs = train_ids if epoch_inputs is None else epoch_inputs(epoch)
        for batch in batches:
            model.train()
            if cached is not None:
                logits, aux = cached.forward(batch)
            else:
                logits, aux = model(torch.stack([inputs[i] for i in batch]))
            task_loss = torch.nn.functional.cross_entropy(logits.float(), targets[batch])
            loss = task_loss + aux_coef * aux if aux is not None else task_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            interval += torch.tensor([float(task_loss.detach()), float(aux.detach()) if aux is not None else 0.0, 1.0],
                                     dtype=torch.float64)
            if progress is not None:
                progress(step, total)
            if step % eval_every == 0 or step == total:
                valid_logits = cached.predict_valid() if cached is not None else \
                    predict_logits(model, valid_ids, options.batch_size)
                metrics = _valid_metrics(valid_logits, valid_y, selection)
                record = {"step": step, "epoch": epoch, "train_task_loss": float(interval[0] / interval[2]),
                          "train_aux_loss": float(interval[1] / interval[2]) if cached is None else None,
                          "seconds": round(time.time() - started, 1), **{f"valid_{k}": v for k, v in metrics.items()}}
                interval.zero_()
                history.append(record)
                improved = _better(metrics, best, selection)
                log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
                    + ("  *best*" if improved else ""))
                if improved:
                    best, best_state, stale = metrics, copy.deepcopy(model.state_dict()), 0
                else:
                    stale += 1
            if step >= total or stale >= options.patience:
                break
        epoch += 1
    if best_state is not None and restore == "best":
        model.load_state_dict(best_state)
    return best or {}, history


def _atomic_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_classifier(model: SequenceClassifier, out_dir: Path, classes: list[str], base: dict,
                    options: FinetuneOptions) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(out_dir / "classifier.safetensors")
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out_dir / "classifier.safetensors")
    _atomic_json(out_dir / "classifier.json", {"classes": classes, "rc_conjoin": model.rc_conjoin,
                                               "pooling": model.pooling, "seq_len": model.seq_len,
                                               "base_export": base, "options": asdict(options)})


def load_classifier(out_dir: str | Path) -> tuple[SequenceClassifier, list[str]]:
    """(classifier in eval mode, class names) from a finetune output directory."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    meta_path = out_dir / "classifier.json"
    if not meta_path.is_file():
        raise ExportError(f"{out_dir}: classifier.json missing; not a launch/finetune.py output")
    meta = json.loads(meta_path.read_text())
    backbone = JanusModel(model_config_from_dict(meta["base_export"]["model"], str(meta_path)))
    model = SequenceClassifier(backbone, len(meta["classes"]), meta["rc_conjoin"], pooling=meta.get("pooling", "mean"),
                               seq_len=meta.get("seq_len", 0))
    model.load_state_dict(load_file(str(out_dir / "classifier.safetensors")))
    return model.eval(), meta["classes"]


def finetune(model_dir: str | Path, train_path: str | Path, valid_path: str | Path | None, out_dir: str | Path,
             test_path: str | Path | None = None, options: FinetuneOptions | None = None, log=print,
             progress=None) -> dict:
    """The whole CLI job: read tables, finetune, evaluate, write the best model and metrics.json.
    `progress(step, total)`: see train_classifier."""
    options = options or FinetuneOptions()
    columns = dict(sequence_column=options.sequence_column, label_column=options.label_column)
    train = read_labelled_tsv(train_path, **columns)
    if valid_path:
        valid = read_labelled_tsv(valid_path, **columns)
    else:  # no validation file: hold out a stratified, seeded share of the training rows
        train, valid = split_valid(train, options.valid_fraction, options.seed)
        log(f"no validation file: {len(valid.sequences)} of the training rows held out for validation "
            f"(valid_fraction {options.valid_fraction}, seed {options.seed})")
    test = read_labelled_tsv(test_path, **columns) if test_path else None
    classes = sorted(set(train.labels))
    if len(classes) < 2:
        raise ValueError(f"{train_path}: only one class ({classes}) in the training set")
    train_y, valid_y = encode_labels(train, classes), encode_labels(valid, classes)
    test_y = encode_labels(test, classes) if test else None
    seq_len = 0
    if options.pooling == "flatten":
        lengths = {len(s) for t in (train, valid, test) if t for s in t.sequences}
        if len(lengths) != 1:
            raise ValueError(f"--pooling flatten needs sequences of one length; found lengths {sorted(lengths)[:5]}")
        seq_len = lengths.pop()
    torch.manual_seed(options.seed)
    model = SequenceClassifier(load_backbone(model_dir, kernels=None), len(classes), options.rc_conjoin, options.dropout,
                               options.pooling, seq_len)
    log(f"finetuning {model_dir} on {len(train_y)} sequences, {len(classes)} classes {classes}; "
        f"valid {len(valid_y)}" + (f", test {len(test_y)}" if test else ""))
    mode = model.backbone.config.tokenizer
    train_ids, valid_ids = encode_all(train.sequences, mode), encode_all(valid.sequences, mode)
    best_valid, history = train_classifier(model, train_ids, train_y, valid_ids, valid_y, options, log, progress)
    result = {"classes": classes, "valid": best_valid, "history": history, "options": asdict(options),
              "model": str(model_dir)}
    if test:
        logits = predict_logits(model, encode_all(test.sequences, mode), options.batch_size)
        result["test"] = classification_metrics(logits, torch.tensor(test_y))
        log("test " + " ".join(f"{k}={v:.4f}" for k, v in result["test"].items()))
    out_dir = Path(out_dir)
    save_classifier(model, out_dir, classes, read_export_config(model_dir), options)
    _atomic_json(out_dir / "metrics.json", result)
    return result
