"""Evaluation plugins, by declaration.

Each plugin is one module here with one :class:`EvalPlugin` subclass; :data:`BUILTIN` lists them
(name -> ``"module:Class"``), so a helper file dropped in this folder is not mistaken for a plugin.
A task's YAML lists the plugins that apply in ``psy.eval_plugins`` and their options in
``psy.eval_options.<plugin>``. Plugins from outside the repository are added with :func:`register`
(``"package.module:Class"``). Modules are imported on first use, so that `psyfactory --help` stays fast.
"""

from __future__ import annotations

import difflib
import importlib

from psyfactory.core.errors import EvalError
from psyfactory.plugins.base import EvalContext, EvalPlugin, PluginOptions, PluginResult, Sample, TaskInfo

BUILTIN: dict[str, str] = {
    "classification": "psyfactory.plugins.classification:ClassificationPlugin",
    "generation": "psyfactory.plugins.generation:GenerationPlugin",
    "json_fields": "psyfactory.plugins.json_fields:JsonFieldsPlugin",
    "json_labels": "psyfactory.plugins.json_labels:JsonLabelsPlugin",
    "llm_judge": "psyfactory.plugins.llm_judge:LLMJudgePlugin",
    "lm_eval": "psyfactory.plugins.lm_eval:LmEvalPlugin",  # results of `make harness`, read back by compare
    "psychcounsel_bench": "psyfactory.plugins.psychcounsel_bench:PsychCounselBenchPlugin",
    "submission": "psyfactory.plugins.submission:SubmissionPlugin",
}
_EXTRA: dict[str, str] = {}  # registered from outside plugins/


def register(name: str, target: str) -> None:
    """Register a plugin that lives outside `plugins/`, as ``"package.module:Class"``."""
    _EXTRA[name] = target


def names() -> list[str]:
    """Every plugin name: the built-in ones and the registered ones."""
    return sorted({*BUILTIN, *_EXTRA})


def plugin_class(name: str) -> type[EvalPlugin]:
    """The class of the plugin called ``name``; an unknown name is an EvalError with a suggestion."""
    target = _EXTRA.get(name) or BUILTIN.get(name)
    if target is None:
        hint = difflib.get_close_matches(name, names(), n=1)
        raise EvalError(f"unknown eval plugin {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + f"; known: {', '.join(names())}")
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, EvalPlugin)) or cls.name != name:
        raise TypeError(f"{target} is not an EvalPlugin named {name!r}")
    return cls


def get_plugin(name: str) -> EvalPlugin:
    """Instantiate the plugin called ``name``."""
    return plugin_class(name)()


__all__ = ["BUILTIN", "EvalContext", "EvalPlugin", "PluginOptions", "PluginResult", "Sample", "TaskInfo",
           "get_plugin", "names", "plugin_class", "register"]
