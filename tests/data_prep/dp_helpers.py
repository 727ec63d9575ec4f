from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from psyfactory.core.paths import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "datasets"
SAMPLES = REPO_ROOT / "data_prep" / "samples"
BAD = Path(__file__).parent / "fixtures" / "bad"


def need_shared() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"real samples not found at {SHARED}")


def rows(dataset_dir: Path, task: str, split: str) -> list[dict[str, Any]]:
    path = dataset_dir / "data" / task / f"{split}.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def quarantine(dataset_dir: Path, task: str) -> list[dict[str, Any]]:
    return rows(dataset_dir, task, "quarantine")


def acc(result: dict, task: str, source_prefix: str):
    found = [a for a in result[task] if a.source.startswith(source_prefix)]
    assert len(found) == 1, [a.source for a in result[task]]
    return found[0]
