"""Fixtures for the GGUF tests: a tiny `student` run with a real LoRA adapter and its merge.

The run directory mirrors what `make train` + `make merge` leave behind (adapter/ with a PEFT LoRA
adapter, merged/ with the merged HF model), built directly with peft on `ensure_tiny()` so these
tests don't depend on a training run. The LoRA weights are random and non-zero, so the adapter
really changes the model and the adapter-vs-merged check is meaningful.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psyfactory import paths


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
def runs_root(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """PSY_RUNS_DIR with runs/tiny/student/lora/{adapter,merged}."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("runs")
    run = root / "tiny" / "student" / "lora"
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(run / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(run / "merged")
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(run / "merged")
    return root


@pytest.fixture(scope="session")
def exported(runs_root: Path) -> dict:
    """`make gguf MODEL=tiny TASK=student HW=cpu ARGS=--lora`, once per session."""
    proc = run_make("gguf", "MODEL=tiny", "TASK=student", "HW=cpu", "ARGS=--lora", env={"PSY_RUNS_DIR": str(runs_root)})
    run = runs_root / "tiny" / "student" / "lora"
    report = json.loads((run / "gguf" / "export.json").read_text(encoding="utf-8"))
    return {"run": run, "report": report, "stderr": proc.stderr, "stdout": proc.stdout}


@pytest.fixture(scope="session")
def student_schema() -> dict:
    from psyfactory.labels import student_schema as schema

    return schema()
