"""`make prep` then `make train MODEL=tiny TASK=<t>` for the prepared tasks (CPU, tiny model).

Every task's config passes preflight against the prepared files (`train --dry-run`); one sharegpt
task trains for real here. The alpaca path trains in the session's shared run (student), and LF's
own loader reads every prepared dataset in test_lf_loader.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from psyutil import cli

from psyfactory.core.paths import REPO_ROOT
from psyfactory.data_prep import tasks
from psyfactory.layers import layer_path, load_layer


def _eval_only(task: str) -> bool:
    return bool(load_layer(layer_path("task", task)).get("psy", {}).get("eval_only"))


def _make(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_make_prep_then_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env = {**os.environ, "PSY_DATASET_DIR": str(tmp_path / "ds"), "PSY_RUNS_DIR": str(tmp_path / "runs"),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = _make("prep", "RAW_DIR=data_prep/samples", "TEACHER=lexicon", env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "read" in p.stdout and "quarantined (by reason)" in p.stdout
    info = json.loads((tmp_path / "ds" / "dataset_info.json").read_text(encoding="utf-8"))
    expected = {f"{t}_{s}" for t in tasks() for s in (("eval",) if _eval_only(t) else ("train", "eval"))}
    assert expected <= set(info)
    assert not {f"{t}_train" for t in tasks() if _eval_only(t)} & set(info)  # benchmarks are never trained on
    p = _make("prep", "RAW_DIR=data_prep/samples", "TASK=student", env={**env, "PSY_TEACHER_BASE_URL": ""})
    assert p.returncode == 2 and "no teacher configured" in p.stderr  # explicit task, no teacher: clear error
    for key in ("PSY_DATASET_DIR", "PSY_RUNS_DIR"):
        monkeypatch.setenv(key, env[key])
    for task in (t for t in tasks() if not _eval_only(t)):
        res = cli("train", "--model", "tiny", "--task", task, "--hw", "cpu", "--dry-run", "max_steps=2")
        assert (tmp_path / "runs" / "tiny" / task / "lora" / "train.yaml").is_file(), res.stdout
    p = _make("train", "MODEL=tiny", "TASK=psydt", "HW=cpu",
              "ARGS=max_steps=2 save_steps=2 logging_steps=1 cutoff_len=256 overwrite_output_dir=true", env=env)
    assert p.returncode == 0, (p.stdout[-1500:], p.stderr[-1500:])
    assert (tmp_path / "runs" / "tiny" / "psydt" / "lora" / "adapter" / "adapter_model.safetensors").exists()
