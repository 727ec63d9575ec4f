"""Where things live. Every location of the user's files can be redirected with an environment variable
(core.settings).

Two kinds of files:

- the package's own, read at run time: `configs/`, `evaluation/` (schemas, benchmark prompts, rubrics, the
  crisis lexicon), `slurm/` (job templates, the default cluster profile), the built-in `dataset_info.json`
  and `data_prep/samples/`. In a checkout (an editable install is one) they are the checkout's top-level
  folders; in an installed wheel the same folders under `psyfactory/share/` (`data_prep/` is the package
  `psyfactory/data_prep/`), which pyproject.toml maps there at build time.
- the user's working files: `runs/`, `data/` with its `dataset_info.json`, `raw/`, Slurm logs. In a checkout
  they go into the checkout, as they always did; installed, into the current directory (`work_dir()`).
"""

from __future__ import annotations

from pathlib import Path

from psyfactory.core import settings

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # psyfactory/
INSTALLED = (PACKAGE_DIR / "share").is_dir()  # psyfactory/__init__.py decides the same way
# The checkout, or None in an installed wheel. Only the checkout's own business uses it (its git commit).
REPO_ROOT: Path | None = None if INSTALLED else PACKAGE_DIR.parent
SHARE_DIR = PACKAGE_DIR / "share" if INSTALLED else PACKAGE_DIR.parent  # holds configs/, evaluation/, slurm/
CONFIG_DIR = SHARE_DIR / "configs"
EVALUATION_DIR = SHARE_DIR / "evaluation"
SLURM_DIR = SHARE_DIR / "slurm"
SAMPLES_DIR = (PACKAGE_DIR if INSTALLED else PACKAGE_DIR.parent) / "data_prep" / "samples"
BUILTIN_DATASET_INFO = SHARE_DIR / "dataset_info.json"  # the built-in tasks' entries, as `make prep` writes them


def work_dir() -> Path:
    """The user's working folder: the checkout, or (installed) the current directory."""
    return REPO_ROOT if REPO_ROOT is not None else Path.cwd()


def _env_path(var: str, default: Path) -> Path:
    return settings.path(var) or default


def config_dirs() -> list[Path]:
    """Config roots, searched in order: `$PSY_CONFIG_DIRS` (a user's own models/tasks/recipes), then
    the package's `configs/`."""
    return [*settings.paths("PSY_CONFIG_DIRS"), CONFIG_DIR]


def dataset_dir() -> Path:
    """Directory holding `dataset_info.json`; data files are `data/<task>/<split>.jsonl` below it."""
    return _env_path("PSY_DATASET_DIR", work_dir())


def dataset_info_path() -> Path:
    return dataset_dir() / "dataset_info.json"


def runs_root() -> Path:
    return _env_path("PSY_RUNS_DIR", work_dir() / "runs")


def run_dir(name: str) -> Path:
    """Directory of the run named `name` (e.g. `qwen3-4b/psydt/lora`, see psyfactory.runs)."""
    return runs_root() / name


def raw_dir() -> Path:
    """Folder with the original dataset files: `$PSY_RAW_DIR` or `<work>/raw`."""
    return _env_path("PSY_RAW_DIR", work_dir() / "raw")


def cache_dir() -> Path:
    return _env_path("PSY_CACHE_DIR", Path.home() / ".cache" / "psyfactory")


def detector_dir() -> Path:
    """Trained crisis detectors (`make crisis-detector`): `$PSY_DETECTOR_DIR` or `<cache>/crisis_detectors`."""
    return _env_path("PSY_DETECTOR_DIR", cache_dir() / "crisis_detectors")


def local_teacher_file() -> Path:
    """Written by `make teacher` while it serves: {base_url, model, gguf, pid}; read by TEACHER=local."""
    return cache_dir() / "teacher" / "local.json"


def repo_path(value: str | Path) -> Path:
    """A path as written in a config (`evaluation/schemas/student_labels.json`): absolute, `~`-relative, or
    relative to the checkout root. Installed, a relative path names the package's own file when it has one,
    else a file relative to the working folder (a user's own schema beside their own task)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    own = SHARE_DIR / path
    return own if not INSTALLED or own.exists() else work_dir() / path


def shown(path: Path) -> str:
    """A file of the package as docs, headers and records show it, the same in a checkout and installed:
    `configs/models/tiny.yaml`, `data_prep/prompts/student_teacher.md`; any other file as its full path."""
    for root in (SHARE_DIR, PACKAGE_DIR):
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return str(path)
