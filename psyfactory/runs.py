"""Run identity. A run is a named directory under the runs root (`$PSY_RUNS_DIR`, default `runs/`):

    runs/<name>/   name = `<model>/<task>/<method>` by default, or `RUN=<name>`, or a recipe's name

`make train` records who the run is (model, task, method, hardware, overrides) in the run's
`manifest.json`; later commands that name the run (`RUN=<name>`, or the same MODEL/TASK/METHOD)
read it back, so `make merge RUN=lr-5e-5` needs nothing else. Every evaluation of a run is a named
variant under `runs/<name>/eval/<variant>/` (see psyfactory.evaluate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psyfactory.core import paths
from psyfactory.core.errors import ConfigError
from psyfactory.manifest import read_manifest
from psyfactory.recipes import load_recipe

DEFAULT_MODEL, DEFAULT_TASK, DEFAULT_METHOD = "tiny", "psydt", "lora"
# Folder names inside a run directory: a run name may not use them, so no run nests in another's files.
RESERVED = frozenset({"eval", "adapter", "merged", "gguf", "predict", "slurm"})
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


@dataclass(frozen=True)
class RunId:
    name: str
    model: str
    task: str
    method: str
    recipe: str | None = None  # configs/recipes/<name>.yaml, a layer of every stage of the run

    @property
    def dir(self) -> Path:
        return paths.run_dir(self.name)


def default_name(model: str, task: str, method: str, recipe: str | None = None) -> str:
    """The one place a run's default name is made: the recipe's name, else `<model>/<task>/<method>`."""
    return recipe or f"{model}/{task}/{method}"


def check_name(name: str) -> str:
    """A run name is one or more `/`-separated segments of letters, digits and `._+=-`."""
    clean = name.strip().strip("/")
    segments = clean.split("/") if clean else []
    bad = [s for s in segments if not _SEGMENT.fullmatch(s) or s in RESERVED]
    if not segments or bad:
        raise ConfigError(f"RUN={name!r}: a run name is '/'-separated segments of letters, digits and ._+=- "
                          f"(not starting with '.' or '-', none of {', '.join(sorted(RESERVED))})")
    return clean


def recorded(run_dir: Path) -> dict[str, Any] | None:
    """The identity `make train` recorded for the run (manifest.json `run`), or None."""
    return read_manifest(run_dir).get("run")


def resolve(run: str | None, model: str | None, task: str | None, method: str | None,
            recipe: str | None = None) -> tuple[RunId, list[str]]:
    """The run a command addresses, and the config overrides it was trained with ([] if never trained).

    A recipe gives the run's default name and its MODEL/TASK/METHOD; running it on another model or
    task needs a RUN name of its own. With a recorded identity, MODEL/TASK/METHOD/RECIPE default to
    it and must not contradict it."""
    given = {"model": model, "task": task, "method": method}  # what the command line says
    if recipe:
        spec = load_recipe(recipe).spec
        differs = [f"{k.upper()}={v}" for k, v in given.items() if v is not None and v != getattr(spec, k)]
        if differs and not run:
            raise ConfigError(f"RECIPE={recipe} runs MODEL={spec.model} TASK={spec.task} METHOD={spec.method}; "
                              f"to run it with {' '.join(differs)} give the run a name of its own: RUN=<name>")
        model, task, method = model or spec.model, task or spec.task, method or spec.method
    name = check_name(run or default_name(model or DEFAULT_MODEL, task or DEFAULT_TASK, method or DEFAULT_METHOD,
                                          recipe))
    rec = recorded(paths.run_dir(name))
    if rec is None:
        return RunId(name, model or DEFAULT_MODEL, task or DEFAULT_TASK, method or DEFAULT_METHOD, recipe), []
    if recipe and rec.get("recipe") != recipe:
        was = f"RECIPE={rec['recipe']}" if rec.get("recipe") else "no recipe"
        raise ConfigError(f"run '{name}' was trained with {was}, not RECIPE={recipe}: drop RECIPE= or choose "
                          "another RUN=")
    for key, value in given.items():
        if value is not None and value != rec[key]:
            raise ConfigError(f"run '{name}' was trained with {key.upper()}={rec[key]}, not {key.upper()}={value}: "
                              f"drop {key.upper()}= or choose another RUN=")
    return (RunId(name, rec["model"], rec["task"], rec["method"], rec.get("recipe")),
            list(rec.get("overrides") or []))


def all_runs(root: Path | None = None) -> list[str]:
    """Names of the runs under the runs root that hold a manifest or an evaluation."""
    root = root or paths.runs_root()
    found = {p.parent.relative_to(root).as_posix() for p in root.glob("**/manifest.json")}
    found |= {p.parents[2].relative_to(root).as_posix() for p in root.glob("**/eval/*/metrics.json")}
    return sorted(n for n in found if n != ".")
