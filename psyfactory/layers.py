"""Config layer files: where they are, how they load.

A layer is `configs/<kind folder>/<name>.yaml` (models, tasks, methods, hardware, recipes). Folders
in `$PSY_CONFIG_DIRS` are searched first, so a lab adds its own model, task or recipe YAML without
editing the checkout. A key written twice in one file is an error (YAML would keep the last).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from psyfactory.core import paths
from psyfactory.core.errors import ConfigError

LAYER_DIRS = {"hardware": "hardware", "method": "methods", "model": "models", "task": "tasks", "recipe": "recipes"}


def _folders(kind: str) -> list[Path]:
    return [root / LAYER_DIRS[kind] for root in paths.config_dirs()]


def list_names(kind: str) -> list[str]:
    """Names available for a layer kind: 'model', 'task', 'method', 'hardware' or 'recipe'."""
    return sorted({p.stem for folder in _folders(kind) for p in folder.glob("*.yaml") if p.is_file()})


def layer_path(kind: str, name: str, source: str = "") -> Path:
    """The file of layer `name` (the first config folder that has it); an unknown name is one error line
    listing the valid ones."""
    for folder in _folders(kind):
        path = folder / f"{name}.yaml"
        if path.is_file() and "/" not in name:
            root = folder.parent.resolve()
            if not path.resolve().is_relative_to(root):
                raise ConfigError(f"{path}: a symbolic link to {path.resolve()}, outside {root}; copy the file in, or "
                                  "name its folder in PSY_CONFIG_DIRS")
            return path
    valid = list_names(kind)
    hint = difflib.get_close_matches(name, valid, n=1)
    raise ConfigError(f"{source + ': ' if source else ''}unknown {kind.upper()} '{name}'; valid: "
                      f"{', '.join(valid) or 'none'}" + (f" (did you mean '{hint[0]}'?)" if hint else ""))


def check_names(model: str, task: str, method: str, source: str = "") -> None:
    """Each name must have its layer file."""
    for kind, name in (("model", model), ("task", task), ("method", method)):
        layer_path(kind, name, source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key written twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is set twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_text(path: Path) -> str:
    """A config file's text; unreadable or not UTF-8 is one ConfigError naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8 at byte {e.start}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def _contains_itself(value: Any, inside: tuple[int, ...] = ()) -> bool:
    """Whether a loaded YAML value holds itself (a recursive alias); shared, non-recursive aliases are fine."""
    if not isinstance(value, (dict, list)):
        return False
    if id(value) in inside:
        return True
    children = value.values() if isinstance(value, dict) else value
    return any(_contains_itself(v, (*inside, id(value))) for v in children)


def load_layer(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(read_text(path), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: a YAML alias refers to itself (recursive anchor)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    if _contains_itself(data):  # `a: &x [*x]` loads as a list inside itself
        raise ConfigError(f"{path}: a YAML alias refers to itself (recursive anchor)")
    return data


def shown(path: Path) -> str:
    """A layer path as docs and headers show it: `configs/...` for the package's own, else the full path."""
    return paths.shown(path)
