"""Shared fixtures: an isolated workspace (runs + dataset dir in tmp) and the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from psyutil import write_psydt_like


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from psyfactory.tiny import ensure_tiny

    return ensure_tiny()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PSY_RUNS_DIR and PSY_DATASET_DIR inside tmp_path, with a small psydt-shaped dataset."""
    ds = tmp_path / "dataset"
    ds.mkdir()
    write_psydt_like(ds)
    monkeypatch.setenv("PSY_DATASET_DIR", str(ds))
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path
