"""Helpers shared by test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from psyfactory import paths


def psy(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (same interpreter)."""
    proc = subprocess.run(
        [sys.executable, "-m", "psyfactory", *args], capture_output=True, text=True, cwd=paths.REPO_ROOT, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"psyfactory {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


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
