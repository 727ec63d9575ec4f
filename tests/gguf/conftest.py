"""Fixtures for the GGUF tests: the session's tiny `student` run (tests/conftest.py `tiny_run`: a real
LoRA adapter trained at a high learning rate, and its merge) exported once with `make gguf`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psyfactory.core import paths


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "psyfactory", *args], text=True, capture_output=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"psyfactory {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_make(target: str, *variables: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`make TARGET VAR=...` with this interpreter's venv; -o keeps make from re-running the setups."""
    venv = Path(sys.prefix)
    cmd = ["make", "--no-print-directory", "-C", str(paths.REPO_ROOT), f"VENV={venv}",
           "-o", str(venv / ".psyfactory-setup"), "-o", str(venv / "psyfactory-gguf.json"), target, *variables]
    proc = subprocess.run(cmd, text=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def make():
    return run_make


@pytest.fixture(scope="session")
def cli():
    """Run `python -m psyfactory ARGS` in a child process."""
    return run_cli


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from psyfactory.tiny import ensure_tiny

    return ensure_tiny()


@pytest.fixture(scope="session")
def runs_root(tiny_run) -> Path:
    """PSY_RUNS_DIR of the session's tiny run (runs/tiny/student/lora with adapter/ and merged/)."""
    return tiny_run.runs_root


@pytest.fixture(scope="session")
def exported(runs_root: Path) -> dict:
    """`make gguf RUN=tiny/student/lora HW=cpu ARGS=--lora`, once per session."""
    proc = run_make("gguf", "RUN=tiny/student/lora", "HW=cpu", "ARGS=--lora", env={"PSY_RUNS_DIR": str(runs_root)})
    run = runs_root / "tiny" / "student" / "lora"
    report = json.loads((run / "gguf" / "export.json").read_text(encoding="utf-8"))
    return {"run": run, "report": report, "stderr": proc.stderr, "stdout": proc.stdout}


@pytest.fixture(scope="session")
def student_schema() -> dict:
    from psyfactory.data_prep.teacher import student_schema

    return student_schema().schema
