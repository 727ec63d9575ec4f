"""Where things live. Every location can be redirected with an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
EVALUATION_DIR = REPO_ROOT / "evaluation"


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def dataset_dir() -> Path:
    """Directory holding `dataset_info.json`; data files are `data/<task>/<split>.jsonl` below it."""
    return _env_path("PSY_DATASET_DIR", REPO_ROOT)


def dataset_info_path() -> Path:
    return dataset_dir() / "dataset_info.json"


def runs_root() -> Path:
    return _env_path("PSY_RUNS_DIR", REPO_ROOT / "runs")


def run_dir(model: str, task: str, method: str) -> Path:
    return runs_root() / model / task / method


def cache_dir() -> Path:
    return _env_path("PSY_CACHE_DIR", Path.home() / ".cache" / "psyfactory")
