"""Helpers shared by test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
import sys

from psyfactory import paths


def psy(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (same interpreter)."""
    proc = subprocess.run(
        [sys.executable, "-m", "psyfactory", *args], capture_output=True, text=True, cwd=paths.REPO_ROOT, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"psyfactory {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
