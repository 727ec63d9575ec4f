"""Settings in one place: every environment variable PsyFactory reads is declared in
psyfactory.core.settings and listed in docs/configs.md; no other module reads a PSY_* variable."""

from __future__ import annotations

import ast
import re

import pytest

from psyfactory.core import settings
from psyfactory.core.errors import ConfigError
from psyfactory.core.paths import REPO_ROOT


def env_reads(path) -> list[str]:
    """`os.environ.get("X")`, `os.environ["X"]` (read) and `os.getenv("X")` of literal names in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            target = ast.unparse(node.func)
            if target in ("os.environ.get", "os.getenv", "environ.get"):
                out.append(node.args[0].value)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value) == "os.environ" \
                and isinstance(node.slice, ast.Constant):
            out.append(node.slice.value)
    return out


def test_no_module_but_settings_reads_a_psy_variable():
    for top in ("psyfactory", "plugins", "data_prep"):
        for path in (REPO_ROOT / top).rglob("*.py"):
            if path.name == "settings.py":
                continue
            bad = [v for v in env_reads(path) if v.startswith("PSY_")]
            assert not bad, f"{path.relative_to(REPO_ROOT)} reads {bad}: ask psyfactory.core.settings"
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"os\.environ\.get\(f?[\"']PSY_", text), path


def test_every_psy_variable_mentioned_is_declared():
    """A PSY_* name in code, templates or scripts is either declared here or a shell-local of a template."""
    shell_locals = {"PSY_CHILD", "PSY_FORWARD_USR1", "PSY_FIRST_NODE", "PSY_NODE_ADDR"}  # the job templates' own
    found = set()
    for pattern in ("psyfactory/**/*.py", "plugins/*.py", "data_prep/*.py", "slurm/*", "scripts/*.sh", "Makefile"):
        for path in REPO_ROOT.glob(pattern):
            if path.is_file():
                found |= set(re.findall(r"\bPSY_[A-Z_]*[A-Z]\b", path.read_text(encoding="utf-8")))
    prefixes = {"PSY_TEACHER", "PSY_JUDGE"}  # `<prefix>_BASE_URL`... composed by the endpoint reader
    undeclared = sorted(found - set(settings.SETTINGS) - shell_locals - prefixes)
    assert not undeclared, f"declare these in psyfactory.core.settings: {undeclared}"


def test_every_setting_is_documented():
    doc = (REPO_ROOT / "docs" / "configs.md").read_text(encoding="utf-8")
    for _group, name, _default, purpose in settings.describe():
        assert f"| `{name}` |" in doc, f"docs/configs.md lists no {name}"
        assert purpose


def test_values_are_checked(monkeypatch):
    monkeypatch.setenv("PSY_TEACHER_WORKERS", "four")
    with pytest.raises(ConfigError, match="PSY_TEACHER_WORKERS='four' is not a whole number"):
        settings.number("PSY_TEACHER_WORKERS", 4, int)
    monkeypatch.setenv("PSY_GGUF_LORA", "perhaps")
    with pytest.raises(ConfigError, match="PSY_GGUF_LORA='perhaps'"):
        settings.flag("PSY_GGUF_LORA")
    monkeypatch.setenv("PSY_GGUF_LORA", "yes")
    assert settings.flag("PSY_GGUF_LORA") is True
    with pytest.raises(KeyError):
        settings.get("PSY_NOT_DECLARED")
