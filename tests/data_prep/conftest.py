"""Shared fixtures for the data-prep tests: prepared outputs of the real samples and of our samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from data_prep import prepare
from psyfactory.paths import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "datasets"
SAMPLES = REPO_ROOT / "data_prep" / "samples"
BAD = Path(__file__).parent / "fixtures" / "bad"

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def need_shared() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"real samples not found at {SHARED}")


@pytest.fixture(scope="session")
def shared_prep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    need_shared()
    out = tmp_path_factory.mktemp("shared_prep")
    return out, prepare(None, SHARED, out, teacher="lexicon", quiet=True)


@pytest.fixture(scope="session")
def sample_prep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample_prep")
    return out, prepare(None, SAMPLES, out, teacher="lexicon", quiet=True)


@pytest.fixture(scope="session")
def bad_prep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bad_prep")
    return out, prepare(["psydt", "cpsycoun", "psyqa", "es", "emotion"], BAD, out, quiet=True)
