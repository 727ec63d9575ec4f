"""Every environment variable PsyFactory reads, in one place: name, purpose, default.

No other module calls `os.environ.get` for these; they ask here (`get`, `path`, `number`, `flag`).
docs/configs.md lists the same table (`describe()`; tests/test_settings.py keeps them in step and
checks that no other module reads a `PSY_*` variable). Credentials are read here too, never from configs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from psyfactory.core.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    purpose: str
    default: str = ""  # as shown in the docs ("" = unset)
    group: str = "paths"


_ALL = [
    # -- where things live (<work>: the checkout; installed with pip, the current directory)
    Setting("PSY_RUNS_DIR", "runs root: every run is `<runs root>/<run name>`", "<work>/runs"),
    Setting("PSY_DATASET_DIR", "folder of `dataset_info.json`; data files are `data/<task>/<split>.jsonl` below it",
            "<work>"),
    Setting("PSY_RAW_DIR", "original dataset files (`{raw_dir}` in task and benchmark paths)", "<work>/raw"),
    Setting("PSY_CACHE_DIR", "built models (tiny, smollm2-135m), compiled wheels, the local teacher's state, trained "
            "crisis detectors",
            "~/.cache/psyfactory"),
    Setting("PSY_DETECTOR_DIR", "trained crisis detectors (`make crisis-detector`; the crisis net's learned part), "
            "e.g. one folder a lab shares", "<cache>/crisis_detectors"),
    Setting("PSY_CONFIG_DIRS", "extra config folders (`:`-separated), searched before the package's `configs/`: "
            "your own `models/`, `tasks/`, `recipes/` without editing the checkout or the installed package", ""),
    Setting("PSY_MODEL_DIR", "shared model store: `<dir>/<model name>` or `<dir>/<hub id>` is used when it holds "
            "a config.json (offline compute nodes)", ""),
    Setting("PSY_MODEL_PATHS", "YAML map `model name: /path/to/weights`", "~/.config/psyfactory/models.yaml"),
    Setting("PSY_SLURM_PROFILE", "a Slurm profile layer composed over slurm/profile.yaml", ""),
    Setting("PSY_HW", "hardware profile used when HW=auto", "", "run"),
    # -- the student teacher (data prep) and the LLM judge (eval)
    Setting("PSY_TEACHER_BASE_URL", "OpenAI-compatible endpoint of the student teacher (TEACHER=)", "", "teacher"),
    Setting("PSY_TEACHER_MODEL", "model name sent to the teacher endpoint", "default", "teacher"),
    Setting("PSY_TEACHER_API_KEY", "teacher API key (else OPENAI_API_KEY)", "", "teacher"),
    Setting("PSY_TEACHER_TIMEOUT", "seconds per teacher HTTP request", "60", "teacher"),
    Setting("PSY_TEACHER_HTTP_RETRIES", "HTTP-level retries of a failed teacher request", "2", "teacher"),
    Setting("PSY_TEACHER_RETRIES", "re-asks per invalid teacher answer", "3", "teacher"),
    Setting("PSY_TEACHER_MAX_INVALID", "share of invalid answers above which a teacher run fails", "0.2", "teacher"),
    Setting("PSY_TEACHER_WORKERS", "parallel teacher requests", "4", "teacher"),
    Setting("PSY_TEACHER_MAX_TOKENS", "max tokens of a teacher answer", "256", "teacher"),
    Setting("PSY_TEACHER_RESPONSE_FORMAT", "`none`, `json_object` or `json_schema` (sent to the endpoint)", "none",
            "teacher"),
    Setting("PSY_JUDGE_BASE_URL", "OpenAI-compatible endpoint of the llm_judge plugin", "", "judge"),
    Setting("PSY_JUDGE_MODEL", "judge model name", "default", "judge"),
    Setting("PSY_JUDGE_API_KEY", "judge API key (else OPENAI_API_KEY)", "", "judge"),
    Setting("PSY_JUDGE_TIMEOUT", "seconds per judge HTTP request", "60", "judge"),
    Setting("PSY_JUDGE_HTTP_RETRIES", "HTTP-level retries of a failed judge request", "2", "judge"),
    Setting("OPENAI_API_KEY", "API key for teacher and judge when their own is unset", "", "judge"),
    # -- installing (scripts/setup_env.sh, `make setup`)
    Setting("PSY_TORCH_SPEC", "the torch `make setup` installs instead of the locked one, as pip arguments (e.g. "
            "`torch==2.6.0 --index-url https://download.pytorch.org/whl/cu124`), or `keep`: the torch already in the "
            "venv; every other package stays pinned by requirements/constraints.txt", "", "setup"),
    # -- GGUF / llama.cpp
    Setting("PSY_GGUF_QUANT", "GGUF file `make eval --backend gguf` evaluates: Q4_K_M, Q8_0, Q5_K_M, Q6_K or F16",
            "Q4_K_M", "gguf"),
    Setting("PSY_GGUF_LORA", "1: evaluate base-f16.gguf + adapter-f16.gguf instead of the merged export", "0", "gguf"),
    Setting("PSY_GGUF_CONSTRAINED", "0: no JSON-schema constrained decoding for label tasks", "1", "gguf"),
    Setting("PSY_GGUF_CTX", "llama.cpp context size in tokens", "8192", "gguf"),
    Setting("PSY_GGUF_THREADS", "llama.cpp threads (0: its default)", "0", "gguf"),
    Setting("PSY_GGUF_VERBOSE", "1: show the converter's full log", "0", "gguf"),
    Setting("PSY_GGUF_CMAKE_ARGS", "CMake flags for compiling llama-cpp-python (scripts/setup_gguf.sh), e.g. "
            "-DGGML_CUDA=on", "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF", "gguf"),
    # -- downloads (`make download`)
    Setting("PSY_DOWNLOAD_RETRIES", "attempts per file after a failed or dropped connection (each resumes where "
            "the last one stopped)", "5", "download"),
    Setting("PSY_DOWNLOAD_TIMEOUT", "seconds without an answer before a download attempt counts as failed", "60",
            "download"),
    # -- the field's own variables that we honour
    Setting("HF_ENDPOINT", "Hugging Face mirror (e.g. https://hf-mirror.com) for `make stage` (models) and "
            "`make download` (hub-hosted data)", "", "hub"),
    Setting("USE_MODELSCOPE_HUB", "1: `make stage` downloads models from ModelScope (`psy.modelscope_id`) and "
            "`make download` takes the data ModelScope hosts from there (LLaMA-Factory's switch)", "0", "hub"),
    Setting("HF_TOKEN", "Hugging Face token: gated models in `make stage`, `make export HUB_REPO=` pushes (read "
            "from the environment only, never written anywhere)", "", "hub"),
    Setting("FORCE_TORCHRUN", "1: training launches torchrun even on one device", "0", "run"),
    Setting("NNODES", "nodes of a distributed training run (set by the Slurm training job)", "1", "run"),
    Setting("NODE_RANK", "this node's index in a distributed run; only node 0 writes the run's files", "0", "run"),
    Setting("NPROC_PER_NODE", "training processes per node (default: the visible GPUs, at least 1)", "", "run"),
    Setting("MASTER_ADDR", "address of node 0 for torchrun's rendezvous", "127.0.0.1", "run"),
    Setting("MASTER_PORT", "port of node 0 for torchrun's rendezvous (default: a free one)", "", "run"),
    Setting("RANK", "a training process's global rank (set by torchrun); rank 0 writes the stop marker", "0",
            "run"),
    Setting("WORLD_SIZE", "training processes in all (set by torchrun)", "1", "run"),
    Setting("PSY_WAIT_FOR_RUN", "1: a command on a run another process holds waits for it instead of stopping "
            "(the Slurm jobs set it: merge and eval both follow train and may start together)", "0", "run"),
    Setting("SLURM_ARRAY_TASK_ID", "the sweep point an array task runs (set by Slurm)", "", "run"),
]
SETTINGS: dict[str, Setting] = {s.name: s for s in _ALL}


def _known(name: str) -> Setting:
    if name not in SETTINGS:  # a bug, not a user error: every variable is declared above
        raise KeyError(f"{name} is not declared in psyfactory.core.settings")
    return SETTINGS[name]


def get(name: str, default: str | None = None) -> str | None:
    """The variable's value (stripped), or `default` when unset or empty."""
    _known(name)
    value = os.environ.get(name, "").strip()
    return value or default


def path(name: str, default: Path | None = None) -> Path | None:
    """A folder or file variable, `~` expanded and made absolute."""
    value = get(name)
    return Path(value).expanduser().resolve() if value else default


def paths(name: str) -> list[Path]:
    """A `:`-separated list of folders."""
    value = get(name) or ""
    return [Path(v).expanduser().resolve() for v in value.split(os.pathsep) if v.strip()]


def number(name: str, default: float, kind: type = float) -> float:
    """A non-negative number; a malformed one is a ConfigError naming the variable."""
    value = get(name)
    try:
        out = kind(value) if value else default
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a {'number' if kind is float else 'whole number'}") from None
    if out < 0:
        raise ConfigError(f"{name}={value!r} must not be negative")
    return out


def flag(name: str, default: bool = False) -> bool:
    """1/true/yes/on -> True, 0/false/no/off -> False; unset -> `default`."""
    value = (get(name) or "").lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise ConfigError(f"{name}={value!r}: expected 1/0, true/false, yes/no or on/off")


def describe() -> list[tuple[str, str, str, str]]:
    """(group, name, default, purpose) per variable, for docs/configs.md."""
    return [(s.group, s.name, s.default, s.purpose) for s in _ALL]
