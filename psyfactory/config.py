"""Compose layered YAML configs into the one flat LLaMA-Factory config a run executes.

Layers (later wins): configs/base.yaml < hardware/<hw> < methods/<method> < models/<model>
< tasks/<task> < command-line overrides (`key=value`). Each layer holds LLaMA-Factory keys plus an
optional `psy:` block of PsyFactory keys, which never reaches LLaMA-Factory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from psyfactory import paths
from psyfactory.models import resolve_model_path

LAYER_DIRS = {"hardware": "hardware", "method": "methods", "model": "models", "task": "tasks"}
PSY_KEY = "psy"


class ConfigError(ValueError):
    """A configuration mistake the user can fix (unknown name, bad override, bad YAML)."""


def list_names(kind: str) -> list[str]:
    """Names available for a layer kind: 'model', 'task', 'method' or 'hardware'."""
    folder = paths.CONFIG_DIR / LAYER_DIRS[kind]
    return sorted(p.stem for p in folder.glob("*.yaml"))


def layer_path(kind: str, name: str) -> Path:
    valid = list_names(kind)
    if name not in valid:
        raise ConfigError(f"unknown {kind.upper()} '{name}'; valid: {', '.join(valid)}")
    return paths.CONFIG_DIR / LAYER_DIRS[kind] / f"{name}.yaml"


def load_layer(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    return data


def detect_hardware() -> str:
    """'a40' profile when a CUDA device is visible to torch, else 'cpu'."""
    import torch

    return "a40" if torch.cuda.is_available() else "cpu"


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key=value` strings -> nested dict (values parsed as YAML scalars/lists)."""
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got: {' '.join(bad)}")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))  # type: ignore[return-value]
    except Exception as e:  # omegaconf grammar errors
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {e}") from e


@dataclass
class Composed:
    model: str
    task: str
    method: str
    hw: str
    lf: dict[str, Any]
    meta: dict[str, Any]
    layers: list[Path] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return paths.run_dir(self.model, self.task, self.method)

    def header(self) -> str:
        rel = [str(p.relative_to(paths.REPO_ROOT)) for p in self.layers]
        lines = [
            "# Composed by psyfactory: " + " < ".join(rel) + (f" < {' '.join(self.overrides)}" if self.overrides else ""),
            f"# Recreate: make config MODEL={self.model} TASK={self.task} METHOD={self.method} HW={self.hw}"
            + (f' ARGS="{" ".join(self.overrides)}"' if self.overrides else ""),
        ]
        return "\n".join(lines) + "\n"

    def to_yaml(self) -> str:
        return self.header() + yaml.safe_dump(self.lf, sort_keys=False, allow_unicode=True)


def compose(
    model: str,
    task: str,
    method: str = "lora",
    hw: str = "auto",
    overrides: list[str] | tuple[str, ...] = (),
) -> Composed:
    hw = os.environ.get("PSY_HW", hw) if hw == "auto" else hw
    if hw == "auto":
        hw = detect_hardware()
    layers = [
        paths.CONFIG_DIR / "base.yaml",
        layer_path("hardware", hw),
        layer_path("method", method),
        layer_path("model", model),
        layer_path("task", task),
    ]
    merged = OmegaConf.merge(*(OmegaConf.create(load_layer(p)) for p in layers), parse_overrides(overrides))
    lf: dict[str, Any] = OmegaConf.to_container(merged, resolve=True)  # type: ignore[assignment]
    meta: dict[str, Any] = lf.pop(PSY_KEY, None) or {}

    ref = str(lf["model_name_or_path"])
    meta.setdefault("model_ref", ref)
    lf["model_name_or_path"] = resolve_model_path(model, ref)
    lf["dataset_dir"] = str(paths.dataset_dir())
    lf.setdefault("output_dir", str(paths.run_dir(model, task, method) / "adapter"))
    if meta.get("reasoning", "none") != "none":
        # Reasoning templates add an empty <think> block to the prompt (no loss) when thinking is off,
        # matching Qwen3's own chat template with enable_thinking=False at inference.
        lf["enable_thinking"] = bool(meta.get("thinking", False))
    return Composed(model, task, method, hw, lf, meta, layers, list(overrides))
