"""Evaluation task kinds, one module each (base.py says what a kind owns). A new kind is a new
module in this package: importing the package imports every module in it, and each TaskKind
subclass with a name registers itself in KINDS."""
from __future__ import annotations

import importlib
import pkgutil

from janus_pretrain.evaluation.kinds.base import KINDS, EvaluationError, TaskKind  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
