"""Helpers shared by test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from psyfactory.core import paths


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def real_model_workspace(root: Path, threads: int) -> Iterator[None]:
    """For the real-model tests: runs and prepared data under `root` (PSY_RUNS_DIR=root/runs,
    PSY_DATASET_DIR=root/ds, created), and `threads` CPU threads both in this process (in-process eval)
    and in a training child (OMP_NUM_THREADS); everything restored on exit."""
    import pytest
    import torch

    mp = pytest.MonkeyPatch()
    mp.setenv("PSY_DATASET_DIR", str(root / "ds"))
    mp.setenv("PSY_RUNS_DIR", str(root / "runs"))
    mp.setenv("OMP_NUM_THREADS", str(threads))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    (root / "ds").mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        mp.undo()


def apt_install(packages: tuple[str, ...] | list[str]) -> str | None:
    """`apt-get install` Debian packages (an `apt-get update` and one retry when the first try fails);
    None on success, else the tail of apt-get's stderr. The caller checks root and apt-get first."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    if subprocess.run(cmd, env=env, capture_output=True).returncode == 0:
        return None
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return None if res.returncode == 0 else res.stderr[-800:]


def cli(*args: str, check: bool = True) -> Result:
    """Run `psyfactory ARGS` in this process (no torch import per call); stdout/stderr captured."""
    from psyfactory.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as e:  # argparse
            rc = int(e.code or 0)
    res = Result(rc, out.getvalue(), err.getvalue())
    if check and rc != 0:
        raise AssertionError(f"psyfactory {' '.join(args)} failed ({rc}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def psy(*args: str, check: bool = True, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (same interpreter): for what needs its own process
    (signals, a process-wide environment such as `demo`, stdin)."""
    proc = subprocess.run([sys.executable, "-m", "psyfactory", *args], capture_output=True, text=True,
                          cwd=paths.REPO_ROOT, env={**os.environ, **(env or {})}, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"psyfactory {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def one_error_line(res: Result | subprocess.CompletedProcess) -> str:
    """The single `error:` line a user mistake must produce (exit code 2, no traceback)."""
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def write_psydt_like(dataset_dir: Path, n_train: int = 16, n_eval: int = 4) -> None:
    """A hand-written multi-turn sharegpt set registered as psydt_train / psydt_eval, also as the seed004-psydt
    recipe's own data (its sharegpt splits and the same dialogues as plain ChatML text)."""
    shutil.copy(paths.REPO_ROOT / "dataset_info.json", dataset_dir / "dataset_info.json")
    system = "你是一位以来访者为中心的心理咨询师。"
    for folder in ("psydt", "seed004-psydt"):
        out = dataset_dir / "data" / folder
        out.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", n_train), ("eval", n_eval)):
            with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh, \
                    open(out / f"{split}_text.jsonl", "w", encoding="utf-8") as text:
                for i in range(n):
                    msgs = [
                        {"role": "system", "content": system},
                        {"role": "user", "content": f"老师，我第{i}次考试没考好，心里很难受。"},
                        {"role": "assistant", "content": "听起来这次考试对你很重要，你愿意多说一些吗？"},
                        {"role": "user", "content": "我怕爸妈失望。"},
                        {"role": "assistant", "content": "担心让父母失望是很常见的感受，我们一起看看。"},
                    ]
                    fh.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
                    chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
                    text.write(json.dumps({"text": chatml, "output": ""}, ensure_ascii=False) + "\n")
