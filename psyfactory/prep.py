"""`make prep`: the task YAMLs say where each task's data come from (`psy.data`); this turns them into
data_prep's task specs (built-in parser, or a user's file with its column mapping) and runs the prep.

A task without `psy.data` (a benchmark that brings its own items, e.g. psychcounsel) has nothing to
prepare. A user's own dataset is one task YAML in configs/tasks/ (or in $PSY_CONFIG_DIRS/tasks/).

A recipe with a `data:` block (psyfactory.recipes.RecipeData) prepares its own copy: the training
task's parser, the recipe's options (e.g. no PII scrubbing, as the seeds), written as data/<recipe>/
and registered as `<recipe>_<split>` (`make prep RECIPE=<name>`; `make reproduce` does it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from psyfactory import layers
from psyfactory.core import paths
from psyfactory.core.errors import ConfigError, format_validation_error
from psyfactory.data_prep import FileSpec, TaskSpec
from psyfactory.psyconfig import DataSource
from psyfactory.taskview import expand


def data_path(value: str, task_file: Path, raw_dir: Path) -> Path:
    """A psy.data path: `{raw_dir}` expanded; relative paths from the task file's folder."""
    path = Path(expand(value, raw_dir)).expanduser()
    return path if path.is_absolute() else (task_file.parent / path).resolve()


def data_source(task: str) -> DataSource | None:
    """The task YAML's psy.data, validated (one error line naming the file), or None."""
    path = layers.layer_path("task", task)
    psy = layers.load_layer(path).get("psy") or {}
    if not isinstance(psy, dict) or psy.get("data") is None:
        return None
    try:
        return DataSource.model_validate(psy["data"])
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e, 'psy.data', list(DataSource.model_fields))}") from None


def download_sources(task: str, *, data: bool = True) -> list[str]:
    """The public sources `make download TASK=<task>` fetches: psy.data.download (without `data`: not those),
    then psy.download (a benchmark's own files)."""
    psy = layers.load_layer(layers.layer_path("task", task)).get("psy") or {}
    src = data_source(task) if data else None
    extra = psy.get("download") if isinstance(psy, dict) else None
    found = [*(src.download if src else []), *(extra if isinstance(extra, list) else [])]
    return list(dict.fromkeys(str(s) for s in found))


def tasks_with_data() -> list[str]:
    return [t for t in layers.list_names("task") if data_source(t) is not None]


def task_spec(task: str, raw_dir: Path) -> TaskSpec:
    src = data_source(task)
    path = layers.layer_path("task", task)
    if src is None:
        raise ConfigError(f"{path}: task '{task}' has no psy.data, nothing to prepare (tasks with data: "
                          f"{', '.join(tasks_with_data())})")
    if src.parser is not None:
        return TaskSpec(task, parser=src.parser)
    assert src.file is not None
    return TaskSpec(task, file=FileSpec(
        data_path(src.file, path, raw_dir), data_path(src.eval_file, path, raw_dir) if src.eval_file else None,
        src.format, dict(src.columns), dict(src.tags), src.eval_share))


def specs(names: list[str] | None, raw_dir: Path | None = None) -> list[TaskSpec]:
    """Task specs for `make prep [TASK=a,b]` (none: every task that declares data)."""
    raw = raw_dir or paths.raw_dir()
    return [task_spec(t, raw) for t in (names or tasks_with_data())]


def recipe_spec(recipe: str, raw_dir: Path | None = None) -> tuple[TaskSpec, dict[str, Any]]:
    """(the task spec of a recipe's own data, the prep options it asks for). A recipe without a `data:`
    block trains on its task's data: one error line saying so."""
    from psyfactory.recipes import load_recipe

    r = load_recipe(recipe)
    if r.spec.data is None:
        raise ConfigError(f"{r.path}: recipe '{recipe}' has no `data:` block: it trains on task '{r.spec.task}''s data "
                          f"(make prep TASK={r.spec.task})")
    base = task_spec(r.spec.task, raw_dir or paths.raw_dir())
    options: dict[str, Any] = {"scrub": r.spec.data.scrub}
    if r.spec.data.eval_share is not None:
        options["eval_share"] = r.spec.data.eval_share
    return TaskSpec(recipe, parser=base.parser, file=base.file), options


def prepare_recipe(recipe: str, raw_dir: Path, dataset_dir: Path, **kwargs: Any) -> Any:
    """psyfactory.data_prep.prepare on a recipe's own data (data/<recipe>/, `<recipe>_<split>`), with its options."""
    from psyfactory.data_prep import prepare as run_prep

    spec, options = recipe_spec(recipe, Path(raw_dir).resolve())
    return run_prep([spec], raw_dir, dataset_dir, named=True, **{**kwargs, **options})


def prepare(names: list[str] | None, raw_dir: Path, dataset_dir: Path, **kwargs: Any) -> Any:
    """psyfactory.data_prep.prepare on the tasks' own declarations (none named: every task with data; a teacher
    task without a teacher is then skipped, not an error)."""
    from psyfactory.data_prep import prepare as run_prep

    return run_prep(specs(names, Path(raw_dir).resolve()), raw_dir, dataset_dir, named=bool(names), **kwargs)
