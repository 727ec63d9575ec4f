"""Evaluation plugins, registered by name.

A task's YAML lists the plugins that apply in ``psy.eval_plugins``; ``psyfactory eval`` looks each
name up here. A plugin turns predictions + references (or, for self-contained benchmarks, a model
backend) into a metrics dict and a markdown report section, and may write plots.
"""

from __future__ import annotations

import importlib

from plugins.base import EvalContext, EvalPlugin, PluginResult, Sample

# name -> "module:Class"; modules are imported on first use so that `psyfactory --help` stays fast.
_REGISTRY: dict[str, str] = {
    "json_labels": "plugins.json_labels:JsonLabelsPlugin",
    "psychcounsel_bench": "plugins.psychcounsel_bench:PsychCounselBenchPlugin",
    "classification": "plugins.classification:ClassificationPlugin",
    "generation": "plugins.generation:GenerationPlugin",
    "llm_judge": "plugins.llm_judge:LLMJudgePlugin",
}


def register(name: str, target: str) -> None:
    """Register an extra plugin as ``"package.module:Class"`` (a subclass of :class:`EvalPlugin`)."""
    _REGISTRY[name] = target


def names() -> list[str]:
    return sorted(_REGISTRY)


def get_plugin(name: str) -> EvalPlugin:
    """Instantiate the plugin registered under ``name``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown eval plugin {name!r}; known: {', '.join(names())}")
    module_name, _, cls_name = _REGISTRY[name].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    plugin = cls()
    if not isinstance(plugin, EvalPlugin):
        raise TypeError(f"{_REGISTRY[name]} is not an EvalPlugin")
    return plugin


__all__ = ["EvalContext", "EvalPlugin", "PluginResult", "Sample", "get_plugin", "names", "register"]
