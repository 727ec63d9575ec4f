"""Fixtures for the evaluation tests: the tiny model, an isolated runs/dataset/cache layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")



@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the built tiny model (built once per session into a private cache)."""
    if "PSY_CACHE_DIR" not in os.environ:
        os.environ["PSY_CACHE_DIR"] = str(tmp_path_factory.mktemp("psy_cache"))
    from psyfactory.tiny import ensure_tiny

    return ensure_tiny()
