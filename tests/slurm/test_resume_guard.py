"""The run-dir guard used at submission and in the training job (no cluster needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psyfactory import slurm
from psyfactory.config import compose
from psyfactory.core.errors import UserError
from psyfactory.manifest import config_hash


@pytest.fixture
def composed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))
    return lambda *over: compose("tiny", "psydt", "lora", "cpu", list(over))


def make_ckpt(adapter: Path, step: int, complete: bool = True) -> Path:
    d = adapter / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if complete:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return d


def record(c, cfg_hash: str) -> None:
    c.run_dir.mkdir(parents=True, exist_ok=True)
    (c.run_dir / "manifest.json").write_text(json.dumps({"stages": {"train": {"config_hash": cfg_hash}}}))


def test_fresh_run_dir_starts_fresh(composed):
    assert slurm.check_resumable(composed("max_steps=10")) is None


def test_resumes_last_complete_checkpoint(composed):
    c = composed("max_steps=10")
    adapter = Path(c.lf["output_dir"])
    make_ckpt(adapter, 2)
    make_ckpt(adapter, 10)
    make_ckpt(adapter, 4)
    make_ckpt(adapter, 12, complete=False)  # cut off while saving
    record(c, config_hash(c.lf))
    assert slurm.check_resumable(c) == adapter / "checkpoint-10"  # numeric order, not lexical
    assert (adapter / "incomplete-checkpoint-12").is_dir() and not (adapter / "checkpoint-12").exists()


def test_refuses_checkpoints_of_another_config(composed):
    old = composed("max_steps=10")
    make_ckpt(Path(old.lf["output_dir"]), 2)
    record(old, config_hash(old.lf))
    new = composed("max_steps=10", "learning_rate=0.001")
    with pytest.raises(UserError, match=rf"config hash {config_hash(old.lf)}.*{config_hash(new.lf)}.*mix two runs"):
        slurm.check_resumable(new)
    # overwrite_output_dir=true is the user's explicit "start over"
    assert slurm.check_resumable(composed("max_steps=10", "learning_rate=0.001", "overwrite_output_dir=true")) is None


def test_refuses_checkpoints_without_recorded_config(composed):
    c = composed("max_steps=10")
    make_ckpt(Path(c.lf["output_dir"]), 2)
    with pytest.raises(UserError, match="no recorded config"):
        slurm.check_resumable(c)


def test_restart_sets_old_adapter_aside(composed):
    c = composed()
    adapter = Path(c.lf["output_dir"])
    make_ckpt(adapter, 2)
    moved = slurm.set_aside(adapter)
    assert moved and (moved / "checkpoint-2").is_dir() and not adapter.exists()
    assert slurm.set_aside(adapter) is None
