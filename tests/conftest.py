"""Shared test setup: repo paths, a repo-local torch extension cache, CUDA skip marker."""
from __future__ import annotations

import os
from pathlib import Path

# one thread per process: the suite runs multi-rank tests beside the main process on small CI
# machines, where oversubscribed threads made a 16 s test take over 4 minutes
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
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
