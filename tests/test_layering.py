"""The structure (docs/architecture.md): psyfactory.core imports nothing of ours above it; plugins/ and
data_prep/ import only psyfactory.core from the orchestration package; no import circle anywhere in our
packages, imports inside functions included; nothing but the CLI imports psyfactory.commands;
`psyfactory list` starts without torch or transformers; nothing imports `data_prep` or `plugins` as top-level
names (they are psyfactory.data_prep and psyfactory.plugins)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from psyfactory.core.paths import REPO_ROOT

# folder of the checkout -> its import name (psyfactory/__init__.py: one package, the top-level folders mapped in)
PACKAGES = {"psyfactory": "psyfactory", "data_prep": "psyfactory.data_prep", "plugins": "psyfactory.plugins"}


def modules() -> dict[str, Path]:
    """Import name -> file of every module of ours."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT / folder).with_suffix("").parts
            name = ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])
            out[name] = path
    return out


def imports(path: Path) -> list[str]:
    """Every module a file imports (top level or inside functions); `from pkg import sub` names the
    submodule `pkg.sub` when there is one (importing it does not depend on the rest of `pkg`)."""
    known = modules()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
            found += subs if len(subs) == len(node.names) else [node.module, *subs]
    return found


def ours(names: list[str]) -> list[str]:
    return [n for n in names if n.split(".")[0] == "psyfactory"]


def graph() -> dict[str, set[str]]:
    known = modules()

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in known}
    for m, path in known.items():
        for target in ours(imports(path)):
            t = owner(target)
            if t and t != m:
                edges[m].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert cycles(graph()) == []


def test_the_circle_check_is_not_vacuous():
    edges = graph()
    assert "psyfactory.config" in edges["psyfactory.runspec"]
    assert "psyfactory.runspec" in edges["psyfactory.runner"]
    assert cycles({**edges, "psyfactory.config": edges["psyfactory.config"] | {"psyfactory.runspec"}})


@pytest.mark.parametrize("folder", ["psyfactory/core", "plugins", "data_prep"])
def test_lower_layers_import_only_the_core(folder):
    allowed = ("psyfactory.core",) + (() if folder == "psyfactory/core" else (PACKAGES[folder],))
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        bad = [n for n in ours(imports(path)) if not any(n == a or n.startswith(a + ".") for a in allowed)]
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {bad} (allowed: {', '.join(allowed)})"


def test_only_the_cli_imports_commands():
    for name, path in modules().items():
        if name.startswith("psyfactory.commands") or name == "psyfactory.cli":
            continue
        bad = [n for n in ours(imports(path)) if n.startswith("psyfactory.commands")]
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {bad}: the domain never imports commands/"


def test_the_rule_is_not_vacuous():
    assert "psyfactory.core.errors" in imports(REPO_ROOT / "plugins" / "base.py")
    assert "psyfactory.runspec" in imports(REPO_ROOT / "psyfactory" / "evaluate.py")
    assert "psyfactory.plugins" in ours(imports(REPO_ROOT / "psyfactory" / "evaluate.py"))


def python_files() -> list[Path]:
    """Every Python file of the checkout that is ours (packages, tests, benchmarks, scripts)."""
    skip = {".venv", ".git", "runs", "data", "raw", "build", ".cache"}
    return sorted(p for p in REPO_ROOT.rglob("*.py") if not skip & set(p.relative_to(REPO_ROOT).parts))


def test_one_top_level_name():
    """data_prep/ and plugins/ are psyfactory.data_prep and psyfactory.plugins: an import of the old top-level
    names would load a second copy of the files in a checkout and fail in an installed wheel. Re-apply the
    rename command of commit 'Rename imports: data_prep -> psyfactory.data_prep ...' to files that have them."""
    bad = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            bad += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {n}" for n in names
                    if n.split(".")[0] in ("data_prep", "plugins")]
    assert not bad, "old top-level imports: " + ", ".join(bad)
    assert len(python_files()) > len(modules())  # tests and benchmarks are read too


def test_no_module_shadows_the_standard_library():
    names = {p.stem for p in (REPO_ROOT / "psyfactory").rglob("*.py")}
    assert not names & set(sys.stdlib_module_names) - {"__init__", "__main__"}, names & set(sys.stdlib_module_names)


def test_list_does_not_import_torch_or_transformers():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "psyfactory", "list"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)
    modules_ = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "psyfactory" in modules_ and "yaml" in modules_  # importtime really listed the imports
    assert not modules_ & {"torch", "transformers", "llamafactory", "datasets", "peft"}
    assert "qwen3-4b" in proc.stdout


def test_config_does_not_import_llamafactory():
    """`make config` checks keys, values and templates from the LF snapshot (psyfactory/lf_schema.json)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "psyfactory", "config", "--model", "qwen3-4b",
                           "--task", "psydt", "--hw", "a40"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules_ = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "omegaconf" in modules_
    assert not modules_ & {"torch", "transformers", "llamafactory"}
    assert "model_name_or_path: Qwen/Qwen3-4B" in proc.stdout
