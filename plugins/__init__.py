"""Evaluation plugins, found by file name.

A plugin is `plugins/<name>.py` holding one :class:`EvalPlugin` subclass with ``name = "<name>"``;
adding one is adding that file (docs/evaluation.md, "Add a plugin"). A task's YAML lists the
plugins that apply in ``psy.eval_plugins``. Plugins from outside the repository are registered with
:func:`register` as ``"package.module:Class"``. Modules are imported on first use, so that
`psyfactory --help` stays fast.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from pathlib import Path

from plugins.base import EvalContext, EvalPlugin, PluginOptions, PluginResult, Sample
from psyfactory.core.errors import EvalError

_EXTRA: dict[str, str] = {}  # name -> "module:Class", registered from outside plugins/
_NOT_PLUGINS = {"base"}


def register(name: str, target: str) -> None:
    """Register a plugin that lives outside `plugins/`, as ``"package.module:Class"``."""
    _EXTRA[name] = target


def names() -> list[str]:
    """Every plugin name: the modules of this folder (not `base`, not `_private`) plus registered ones."""
    local = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
             if not m.name.startswith("_") and m.name not in _NOT_PLUGINS]
    return sorted({*local, *_EXTRA})


def plugin_class(name: str) -> type[EvalPlugin]:
    """The class of the plugin called ``name``; an unknown name is an EvalError with a suggestion."""
    if name in _EXTRA:
        module_name, _, cls_name = _EXTRA[name].partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
    elif name in names():
        module = importlib.import_module(f"plugins.{name}")
        found = [c for c in vars(module).values()
                 if isinstance(c, type) and issubclass(c, EvalPlugin) and c.__module__ == module.__name__
                 and getattr(c, "name", None) == name]
        if len(found) != 1:
            raise TypeError(f"plugins/{name}.py must define exactly one EvalPlugin subclass with name = {name!r}")
        cls = found[0]
    else:
        hint = difflib.get_close_matches(name, names(), n=1)
        raise EvalError(f"unknown eval plugin {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + f"; known: {', '.join(names())}")
    if not (isinstance(cls, type) and issubclass(cls, EvalPlugin)):
        raise TypeError(f"{_EXTRA.get(name, name)} is not an EvalPlugin")
    return cls


def get_plugin(name: str) -> EvalPlugin:
    """Instantiate the plugin called ``name``."""
    return plugin_class(name)()


__all__ = ["EvalContext", "EvalPlugin", "PluginOptions", "PluginResult", "Sample", "get_plugin", "names",
           "plugin_class", "register"]
