"""Helpers for the Slurm tests (a uniquely named module: `conftest` is ambiguous across test dirs)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from localcluster import LocalSlurm

from psyfactory.core import paths

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


def psy(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "psyfactory", *args], capture_output=True, text=True,
                          cwd=paths.REPO_ROOT, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"psyfactory {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def wait_final(cluster: LocalSlurm, job_ids: list[str], timeout: float = 300) -> dict[str, dict[str, str]]:
    """Poll `scontrol show job` until every job is in a final state."""
    end = time.monotonic() + timeout
    while True:
        info = {j: cluster.job(j) for j in job_ids}
        if all(i.get("JobState") in FINAL for i in info.values()):
            return info
        if time.monotonic() > end:
            raise TimeoutError(f"jobs not finished after {timeout}s: { {j: i.get('JobState') for j, i in info.items()} }")
        time.sleep(1)


def pipeline_lines(run_dir: Path) -> list[str]:
    return (run_dir / "slurm" / "pipelines.jsonl").read_text(encoding="utf-8").splitlines()


def pipeline(run_dir: Path) -> dict:
    return json.loads(pipeline_lines(run_dir)[-1])
