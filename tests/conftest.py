"""Shared test setup: repo paths, a repo-local torch extension cache, CUDA skip marker."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# DeepSpeed JIT-builds its CPU shm op once; keep it in the repo-local cache the Makefile uses
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and the kernel packages (pip install .[gpu])")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
