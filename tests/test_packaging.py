"""The package as pip installs it (issue 24, item 5; docs/architecture.md, "One package"): the wheel built
from this checkout has one top-level import name, `psyfactory`, with data_prep/, plugins/ and the files the
CLI reads at run time (configs/, evaluation/, slurm/, dataset_info.json) inside it; installed into a fresh
venv, `psyfactory list` and `psyfactory config` work from an empty folder, with no checkout in sight.

The fresh venv gets the wheel alone (`--no-deps`); its dependencies are seen through a .pth line naming this
interpreter's site-packages (a plain path line: the editable install's finder there is not activated, so
nothing of the checkout can be imported). About 10 s: no network, no torch import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from psyfactory.core.paths import REPO_ROOT

MAPPED = {"psyfactory": "psyfactory", "data_prep": "psyfactory/data_prep", "plugins": "psyfactory/plugins", "configs": "psyfactory/share/configs",
          "evaluation": "psyfactory/share/evaluation", "slurm": "psyfactory/share/slurm",
          "dataset_info.json": "psyfactory/share/dataset_info.json"}


def checkout_files() -> list[str]:
    """The checkout's files as git sees them (tracked, plus new files not ignored): what a clone would build."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    return sorted(f for f in out if (REPO_ROOT / f).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a clean copy of the checkout (no build/ or egg-info left in the checkout)."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    src = tmp_path_factory.mktemp("src")
    for f in checkout_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / f, src / f)
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("psyfactory-*.whl")
    return whl


def test_one_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"psyfactory", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    dist = next(n for n in names if n.endswith(".dist-info/RECORD"))
    record = zipfile.ZipFile(wheel).read(dist).decode()
    assert {line.split("/")[0] for line in record.splitlines()} == tops
    top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level[0]).decode().split() == ["psyfactory"]


def test_the_wheel_holds_the_folders_the_cli_reads(wheel):
    """Every file of psyfactory/ and of the mapped folders, at its place (a new subpackage or data folder that
    pyproject.toml's `packages` / `package-data` do not name fails here)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for f in checkout_files():
        top = f.split("/")[0]
        if top in MAPPED and "__pycache__" not in f:
            packed = MAPPED[top] + f[len(top):]
            missing += [] if packed in names else [f]
    assert not missing, f"not in the wheel: {missing}"
    assert "psyfactory/share/configs/models/tiny.yaml" in names
    assert any(n.startswith("psyfactory/data_prep/samples/") for n in names)
    assert not [n for n in names if n.endswith(".pyc")]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel and nothing else of ours; returns its bin/ folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "_psyfactory_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    # --ignore-installed: the editable install of this checkout, seen through the .pth line, is not this wheel
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                        "--ignore-installed", str(wheel)], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    return venv / "bin"


def clean_env() -> dict[str, str]:
    """No PYTHONPATH (it may name the checkout) and none of our variables."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PSY_")}


def run_in(folder: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = clean_env()
    env["PSY_CACHE_DIR"] = str(folder.parent / "cache")
    return subprocess.run(list(cmd), cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_installed_imports_come_from_the_wheel(installed, tmp_path):
    r = run_in(tmp_path, str(installed / "python"), "-c",
               "import psyfactory, psyfactory.plugins, psyfactory.data_prep, psyfactory.core.paths as p;"
               "print(psyfactory.__file__); print(psyfactory.plugins.__file__); print(psyfactory.data_prep.__file__);"
               "print(p.INSTALLED, p.REPO_ROOT)")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    venv = str(installed.parent)
    assert all(line.startswith(venv) for line in lines[:3]), lines
    assert lines[3] == "True None"
    for old in ("plugins", "data_prep"):
        r = run_in(tmp_path, str(installed / "python"), "-c", f"import {old}")
        assert "ModuleNotFoundError" in r.stderr, (old, r.stdout, r.stderr)


def test_installed_cli_lists_and_composes_from_an_empty_folder(installed, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    r = run_in(work, str(installed / "psyfactory"), "list", "--paths")
    assert r.returncode == 0, r.stderr
    assert "tiny" in r.stdout and "psydt" in r.stdout and "seed003-emotion" in r.stdout
    assert "installed package" in r.stdout
    assert f"configs    {installed.parent}" in r.stdout
    assert f"runs       {work}/runs" in r.stdout

    r = run_in(work, str(installed / "psyfactory"), "config", "--model", "tiny", "--task", "psydt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# Composed by psyfactory: configs/base.yaml <"), r.stdout[:300]
    assert "# Recreate: psyfactory config --model tiny --task psydt --method lora --hw cpu\n" in r.stdout
    assert "stage: sft" in r.stdout and f"dataset_dir: {work}" in r.stdout
    assert f"output_dir: {work}/runs/tiny/psydt/lora/adapter" in r.stdout

    r = run_in(work, str(installed / "psyfactory"), "config", "--recipe", "seed003-emotion", "--model", "nope")
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert list(work.iterdir()) == []  # composing writes nothing into the user's folder
