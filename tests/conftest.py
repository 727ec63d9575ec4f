"""Shared fixtures: an isolated workspace, the tiny model, ONE trained tiny run for the whole session
(the spine, eval, GGUF and demo tests all use it), and one OpenAI-compatible server on loopback.

`make test-fast` deselects the tests marked `slow` (anything that trains, serves or converts)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from psyutil import psy, write_psydt_like

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No trained crisis detector unless a test trains one (into a folder of its own): the crisis net of the student
# task is then the lexicon alone, whatever `make crisis-detector` left in the user's cache.
os.environ["PSY_DETECTOR_DIR"] = str(Path(tempfile.gettempdir()) / f"psy-test-no-detectors-{os.getpid()}")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from psyfactory.tiny import ensure_tiny

    return ensure_tiny()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PSY_RUNS_DIR and PSY_DATASET_DIR inside tmp_path, with a small psydt-shaped dataset."""
    ds = tmp_path / "dataset"
    ds.mkdir()
    write_psydt_like(ds)
    monkeypatch.setenv("PSY_DATASET_DIR", str(ds))
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


@dataclass(frozen=True)
class TinyRun:
    """`psyfactory demo --task student` once per session: the bundled samples prepared with the offline
    lexicon teacher, a LoRA run on the tiny model (20 steps, checkpoints at 10 and 20), merged, predicted."""

    runs_root: Path  # PSY_RUNS_DIR of the run
    dataset: Path  # PSY_DATASET_DIR the demo prepared
    stdout: str
    name: str = "tiny/student/lora"

    @property
    def dir(self) -> Path:
        return self.runs_root / self.name

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PSY_RUNS_DIR": str(self.runs_root), "PSY_DATASET_DIR": str(self.dataset),
                "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}

    def manifest(self) -> dict:
        return json.loads((self.dir / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> TinyRun:
    root = tmp_path_factory.mktemp("tiny_run") / "runs"
    # a high learning rate, so that the adapter changes the model measurably (merge parity, GGUF checks)
    # psy.generation.max_new_tokens: room for a whole label JSON in the tiny tokenizer (the demo's 32 cuts it)
    proc = psy("demo", "--task", "student", "learning_rate=5e-3", "save_steps=10", "psy.generation.max_new_tokens=96",
               env={"PSY_RUNS_DIR": str(root)}, timeout=900)
    return TinyRun(root, root / "_demo" / "dataset", proc.stdout)


@pytest.fixture(scope="session")
def lf_api(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """`llamafactory-cli api` serving the tiny model on loopback, shared by every test that needs a live
    OpenAI-compatible server (judge, teacher, client). The random weights never answer valid JSON."""
    from psyfactory.serve import serve_lf_api

    log = tmp_path_factory.mktemp("lf_api") / "api.log"
    with serve_lf_api(tiny_model, "qwen3", extra={"enable_thinking": False}, log_path=log) as endpoint:
        yield endpoint
