"""A task as the stages see it: its eval plugins with their options, its label schema, generation
spec, crisis safety net and eval data. Built from a composed config (psyfactory.config.Composed);
preflight, `make eval`, `make chat` and `make chat-gguf` all ask it, so they agree.

Plugins are found by declaration (psyfactory.plugins.BUILTIN) and checked with the task
(`EvalPlugin.check(options, task)`) before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psyfactory.core import paths
from psyfactory.core.errors import ConfigError, EvalError
from psyfactory.core.generation import GenerationSpec
from psyfactory.plugins import EvalPlugin, TaskInfo, plugin_class
from psyfactory.psyconfig import DataSource, PsyConfig

if TYPE_CHECKING:
    from psyfactory.config import Composed
    from psyfactory.core.labels import LabelSchema
    from psyfactory.core.safety import SafetyNet


@dataclass(frozen=True)
class Plugin:
    """One eval plugin of a task with its validated options."""

    plugin: EvalPlugin
    options: Any

    @property
    def name(self) -> str:
        return self.plugin.name


def expand(value: Any, raw_dir: Path) -> Any:
    """`{raw_dir}` in a configured path."""
    return value.replace("{raw_dir}", str(raw_dir)) if isinstance(value, str) else value


class TaskView:
    """What a task asks of the stages. `raw_dir` resolves `{raw_dir}` in benchmark and data paths."""

    def __init__(self, composed: Composed, raw_dir: Path | None = None) -> None:
        self.composed = composed
        self.raw_dir = raw_dir or paths.raw_dir()

    @property
    def name(self) -> str:
        return self.composed.task

    @property
    def psy(self) -> PsyConfig:
        return self.composed.psy

    @property
    def source(self) -> str:
        return self.composed.source()

    @property
    def generation(self) -> GenerationSpec:
        return self.psy.generation

    @cached_property
    def label_schema(self) -> LabelSchema | None:
        """psy.label_schema, loaded: a path relative to the checkout (paths.repo_path), or else to the task file's folder (a task of
        your own in $PSY_CONFIG_DIRS keeps its schema beside it)."""
        if not self.psy.label_schema:
            return None
        from psyfactory.core.labels import load_schema

        path = paths.repo_path(self.psy.label_schema)
        if not path.exists() and not Path(self.psy.label_schema).is_absolute():
            beside = self.task_file.parent / self.psy.label_schema
            path = beside if beside.exists() else path
        return load_schema(path)

    @property
    def info(self) -> TaskInfo:
        """What plugins see of the task."""
        return TaskInfo(self.name, self.psy.kind, self.label_schema, self.generation, self.source)

    @property
    def eval_dataset(self) -> str | None:
        """dataset_info.json name of the eval split: psy.eval_dataset, else `<task>_eval` for a task with data."""
        if self.psy.eval_dataset:
            return self.psy.eval_dataset
        return f"{self.name}_eval" if self.psy.data is not None else None

    def require_eval_dataset(self) -> str:
        name = self.eval_dataset
        if not name:
            raise EvalError(f"{self.source}: task '{self.name}' has no eval data (psy.data or psy.eval_dataset)")
        return name

    # ------------------------------------------------------------------ plugins
    def plugin_names(self, only: list[str] | None = None) -> list[str]:
        names = list(only) if only else list(self.psy.eval_plugins)
        if not names:
            raise EvalError(f"{self.source}: task '{self.name}' lists no eval plugins (psy.eval_plugins)")
        return names

    def plugins(self, only: list[str] | None = None, *, check: bool = True) -> list[Plugin]:
        """The task's eval plugins (or `only`) with their options (`psy.eval_options.<plugin>`); with
        `check`, each plugin's check(options, task) runs: bad inputs fail here, before a model loads."""
        out = []
        for name in self.plugin_names(only):
            cls = plugin_class(name)
            data = {k: expand(v, self.raw_dir) for k, v in (self.psy.eval_options.get(name) or {}).items()}
            out.append(Plugin(cls(), cls.parse_options(data, self.source)))
        if check:
            info = self.info
            for p in out:
                p.plugin.check(p.options, info)
        return out

    def check(self) -> None:
        """Preflight: the listed plugins (options and checks) and the options of any plugin configured
        but not listed (a typo there fails too)."""
        if self.psy.eval_plugins:
            self.plugins()
        for name, data in self.psy.eval_options.items():
            if name not in self.psy.eval_plugins:
                plugin_class(name).parse_options(data, self.source)

    def safety_net(self) -> SafetyNet | None:
        """The crisis safety net one of the task's plugins declares (json_labels with `safety_net`), checked
        against the label schema; None for tasks without one. `make eval`, `chat` and `chat-gguf` apply it."""
        if self.label_schema is None or not self.psy.eval_plugins:
            return None
        for p in self.plugins(check=False):
            net = p.plugin.safety_net(p.options)
            if net is not None:
                net.check(self.label_schema.values(net.field), self.source)
                return net
        return None

    # ------------------------------------------------------------------ data
    def data_file(self, name: str) -> Path:
        """A `psy.data` file path: `{raw_dir}` expanded, relative paths from the task file's folder."""
        path = Path(expand(name, self.raw_dir)).expanduser()
        return path if path.is_absolute() else self.task_file.parent / path

    @property
    def task_file(self) -> Path:
        return next(p for p in self.composed.layers if p.parent.name == "tasks")

    def data_source(self) -> DataSource:
        if self.psy.data is None:
            raise ConfigError(f"{self.task_file}: task '{self.name}' declares no psy.data (nothing to prepare)")
        return self.psy.data
