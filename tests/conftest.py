"""Shared fixtures: an isolated workspace (runs + dataset dir in tmp) and the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from psyfactory import paths

SHARED_DATASETS = paths.REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from psyfactory.tiny import ensure_tiny

    return ensure_tiny()


def write_psydt_like(dataset_dir: Path, n_train: int = 16, n_eval: int = 4) -> None:
    """A hand-written multi-turn sharegpt set registered as psydt_train / psydt_eval."""
    shutil.copy(paths.REPO_ROOT / "dataset_info.json", dataset_dir / "dataset_info.json")
    out = dataset_dir / "data" / "psydt"
    out.mkdir(parents=True, exist_ok=True)
    system = "你是一位以来访者为中心的心理咨询师。"
    for split, n in (("train", n_train), ("eval", n_eval)):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                msgs = [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"老师，我第{i}次考试没考好，心里很难受。"},
                    {"role": "assistant", "content": "听起来这次考试对你很重要，你愿意多说一些吗？"},
                    {"role": "user", "content": "我怕爸妈失望。"},
                    {"role": "assistant", "content": "担心让父母失望是很常见的感受，我们一起看看。"},
                ]
                fh.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")


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
