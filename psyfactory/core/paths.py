"""Where things live. Every location can be redirected with an environment variable (core.settings)."""

from __future__ import annotations

from pathlib import Path

from psyfactory.core import settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"
EVALUATION_DIR = REPO_ROOT / "evaluation"


def _env_path(var: str, default: Path) -> Path:
    return settings.path(var) or default


def config_dirs() -> list[Path]:
    """Config roots, searched in order: `$PSY_CONFIG_DIRS` (a user's own models/tasks/recipes), then
    the repo's `configs/`."""
    return [*settings.paths("PSY_CONFIG_DIRS"), CONFIG_DIR]


def dataset_dir() -> Path:
    """Directory holding `dataset_info.json`; data files are `data/<task>/<split>.jsonl` below it."""
    return _env_path("PSY_DATASET_DIR", REPO_ROOT)


def dataset_info_path() -> Path:
    return dataset_dir() / "dataset_info.json"


def runs_root() -> Path:
    return _env_path("PSY_RUNS_DIR", REPO_ROOT / "runs")


def run_dir(name: str) -> Path:
    """Directory of the run named `name` (e.g. `qwen3-4b/psydt/lora`, see psyfactory.runs)."""
    return runs_root() / name


def raw_dir() -> Path:
    """Folder with the original dataset files: `$PSY_RAW_DIR` or `<repo>/raw`."""
    return _env_path("PSY_RAW_DIR", REPO_ROOT / "raw")


def cache_dir() -> Path:
    return _env_path("PSY_CACHE_DIR", Path.home() / ".cache" / "psyfactory")


def detector_dir() -> Path:
    """Trained crisis detectors (`make crisis-detector`): `$PSY_DETECTOR_DIR` or `<cache>/crisis_detectors`."""
    return _env_path("PSY_DETECTOR_DIR", cache_dir() / "crisis_detectors")


def local_teacher_file() -> Path:
    """Written by `make teacher` while it serves: {base_url, model, gguf, pid}; read by TEACHER=local."""
    return cache_dir() / "teacher" / "local.json"


def repo_path(value: str | Path) -> Path:
    """A path as written in a config: absolute, `~`-relative, or relative to the repo root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path
