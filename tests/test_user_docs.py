"""The user docs (README, docs/, docs/zh/) against the repository a user has: no `../shared` path (it
exists only in this project's development setup), every relative link resolves, every `make <target>`
and every `VAR=` given to make in a command block exists in the Makefile or in psyfactory.core.settings,
and the Chinese pages cover the user path the README's Chinese quick start points to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from psyfactory.core import settings
from psyfactory.core.paths import REPO_ROOT

DOCS = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.md")])
ZH_PAGES = ("README", "install", "mirrors", "download", "stage", "prep", "teacher", "train", "eval", "gguf", "export",
            "slurm", "recipes", "own-data", "review")


def user_files() -> list[Path]:
    """What a user reads: the docs, config and benchmark-definition comments, CLI help and messages."""
    out = list(DOCS) + [REPO_ROOT / "data_prep" / "samples" / "README.md", REPO_ROOT / "evaluation" / "README.md"]
    for top, pattern in (("configs", "**/*.yaml"), ("evaluation", "**/*.yaml"), ("psyfactory", "**/*.py"),
                         ("data_prep", "*.py"), ("plugins", "*.py"), ("slurm", "*"), ("scripts", "*.sh")):
        out += [p for p in (REPO_ROOT / top).glob(pattern) if p.is_file()]
    return out + [REPO_ROOT / "Makefile"]


def test_no_user_doc_names_the_development_shared_folder():
    bad = [f"{p.relative_to(REPO_ROOT)}:{i}" for p in user_files()
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "../shared" in line]
    assert not bad, f"../shared exists only in the development setup; name what a user has instead: {bad}"


def test_relative_links_resolve():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO_ROOT)} -> {target}")
    assert not broken, broken


def makefile() -> tuple[set[str], set[str]]:
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"(?m)^([a-zA-Z0-9][\w-]*):(?!=)", text))
    variables = set(re.findall(r"(?m)^([A-Z][A-Z0-9_]*)\s*[?:]?=", text)) | set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", text))
    return targets, variables


def command_lines(doc: Path) -> list[str]:
    """The lines of fenced shell blocks and of `make ...` inline code."""
    text = doc.read_text(encoding="utf-8")
    lines = [ln for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S) for ln in block.splitlines()]
    return lines + re.findall(r"`(make [^`]+)`", text)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_make_targets_and_variables_exist(doc):
    targets, variables = makefile()
    known_env = set(settings.SETTINGS) | {"HF_HOME", "PIP_INDEX_URL", "CUDA_VISIBLE_DEVICES"}
    bad = []
    for line in command_lines(doc):
        code = line.split("#", 1)[0]
        for m in re.finditer(r"(?:^|[\s;&|(])make\s+((?:[a-z][\w-]*\s*)+)([^|;&]*)", code):
            for word in m.group(1).split():
                if word not in targets:
                    bad.append(f"make {word}")
            for var in re.findall(r"\b([A-Z][A-Z0-9_]*)=", m.group(2)):
                if var not in variables and var not in known_env:
                    bad.append(f"{var}= (in: {line.strip()})")
    assert not bad, f"{doc.relative_to(REPO_ROOT)} names what the Makefile does not have: {sorted(set(bad))}"


def test_every_psy_variable_in_the_docs_is_declared():
    for doc in DOCS:
        names = set(re.findall(r"\bPSY_[A-Z_]*[A-Z]\b", doc.read_text(encoding="utf-8")))
        undeclared = sorted(names - set(settings.SETTINGS) - {"PSY_TEACHER", "PSY_JUDGE"})
        assert not undeclared, f"{doc.relative_to(REPO_ROOT)}: {undeclared}"


def test_chinese_docs_cover_the_user_path():
    zh = REPO_ROOT / "docs" / "zh"
    for page in ZH_PAGES:
        text = (zh / f"{page}.md").read_text(encoding="utf-8")
        assert len(re.findall(r"[\u4e00-\u9fff]", text)) > 200, f"docs/zh/{page}.md is not a Chinese page"
        assert f"({page}.md)" in (zh / "README.md").read_text(encoding="utf-8") or page == "README"
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme[readme.index("## 中文快速上手"):readme.index("\n## ", readme.index("## 中文快速上手") + 1)]
    for page in ZH_PAGES:
        assert f"(docs/zh/{page}.md)" in quick, page
    for must in ("make stage", "HF_ENDPOINT", "ModelScope", "USE_MODELSCOPE_HUB", "make download", "TEACHER=",
                 "setup-gguf", "make export"):
        assert must in quick, must
