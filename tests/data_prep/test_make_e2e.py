"""Done-when: `make prep` then `make train MODEL=tiny TASK=<t>` works for all six tasks (CPU, tiny model)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from data_prep import TASKS
from psyfactory.paths import REPO_ROOT


def _make(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_make_prep_then_train_every_task(tmp_path: Path):
    env = {**os.environ, "PSY_DATASET_DIR": str(tmp_path / "ds"), "PSY_RUNS_DIR": str(tmp_path / "runs"),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = _make("prep", "RAW_DIR=data_prep/samples", "TEACHER=lexicon", env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "read" in p.stdout and "quarantined (by reason)" in p.stdout
    info = json.loads((tmp_path / "ds" / "dataset_info.json").read_text(encoding="utf-8"))
    assert {f"{t}_{s}" for t in TASKS for s in ("train", "eval")} <= set(info)
    p = _make("prep", "RAW_DIR=data_prep/samples", "TASK=student", env={**env, "PSY_TEACHER_BASE_URL": ""})
    assert p.returncode == 2 and "no teacher configured" in p.stderr  # explicit task, no teacher: clear error
    for task in TASKS:
        p = _make("train", "MODEL=tiny", f"TASK={task}", "HW=cpu",
                  "ARGS=max_steps=2 save_steps=2 logging_steps=1 cutoff_len=256 overwrite_output_dir=true", env=env)
        assert p.returncode == 0, (task, p.stdout[-1500:], p.stderr[-1500:])
        adapter = tmp_path / "runs" / "tiny" / task / "lora" / "adapter"
        assert (adapter / "adapter_model.safetensors").exists(), task
