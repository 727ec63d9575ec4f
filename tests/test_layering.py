"""The layering rule (docs/architecture.md): psyfactory.core imports nothing of ours above it; plugins/
and data_prep/ import only psyfactory.core from the orchestration package; `psyfactory list` starts
without torch or transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from psyfactory.core.paths import REPO_ROOT

OURS = ("psyfactory", "plugins", "data_prep")


def imports(path: Path) -> list[str]:
    """Every module a file imports (top level or inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def ours(names: list[str]) -> list[str]:
    return [n for n in names if n.split(".")[0] in OURS]


@pytest.mark.parametrize("folder", ["psyfactory/core", "plugins", "data_prep"])
def test_lower_layers_import_only_the_core(folder):
    allowed = ("psyfactory.core",) + (() if folder == "psyfactory/core" else (folder.replace("/", "."),))
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        bad = [n for n in ours(imports(path)) if not (n == allowed[0] or n.startswith(allowed[0] + ".")
                                                       or any(n == a or n.startswith(a + ".") for a in allowed))]
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {bad} (allowed: {', '.join(allowed)})"


def test_the_rule_is_not_vacuous():
    assert "psyfactory.core.errors" in imports(REPO_ROOT / "plugins" / "base.py")
    assert "psyfactory.config" in imports(REPO_ROOT / "psyfactory" / "evaluate.py")
    assert "plugins" in imports(REPO_ROOT / "psyfactory" / "evaluate.py")


def test_no_module_shadows_the_standard_library():
    names = {p.stem for p in (REPO_ROOT / "psyfactory").rglob("*.py")}
    assert not names & set(sys.stdlib_module_names) - {"__init__", "__main__"}, names & set(sys.stdlib_module_names)


def test_list_does_not_import_torch_or_transformers():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "psyfactory", "list"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)
    modules = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "psyfactory" in modules and "omegaconf" in modules  # importtime really listed the imports
    assert not modules & {"torch", "transformers", "llamafactory", "datasets", "peft"}
    assert "qwen3-4b" in proc.stdout
