"""Shared fixtures for the data-prep tests: prepared outputs of the real samples and of our samples."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make dp_helpers importable

from dp_helpers import BAD, SAMPLES, SHARED, need_shared  # noqa: E402

from psyfactory.data_prep import prepare  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
