"""Run manifest: what produced a run directory (config, versions, commit, data hashes), per stage."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from psyfactory.core import paths
from psyfactory.core.errors import RunError
from psyfactory.core.files import atomic_write_json
from psyfactory.core.llm_client import redact_all

PACKAGES = (
    "psyfactory", "llamafactory", "torch", "transformers", "peft", "datasets", "trl",
    "accelerate", "bitsandbytes", "tokenizers", "llama_cpp_python",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state() -> dict[str, Any]:
    """The checkout's commit; an installed wheel has none (its version is in `versions`)."""
    if paths.REPO_ROOT is None:
        return {"commit": None, "dirty": False}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=paths.REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "HEAD")
    return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest.json ({} when there is none); a damaged one is one RunError naming it."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise RunError(f"{path}: damaged ({where}); restore it from a backup, or move it aside to treat the "
                       "run as new") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: damaged (not a JSON object); restore it or move it aside")
    return data


def record_stage(
    run_dir: Path,
    stage: str,
    config_file: Path,
    lf_config: dict[str, Any],
    meta: dict[str, Any],
    data_files: list[Path] = (),  # type: ignore[assignment]
    *,
    data_sha256: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Add or replace one stage's entry in run_dir/manifest.json (atomic). `data_sha256`: the hashes taken
    when the stage started (training records those at every status, never the files as they are later)."""
    manifest = read_manifest(run_dir)
    manifest.setdefault("stages", {})[stage] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_file": str(config_file),
        "config_hash": config_hash(lf_config),
        "config": redact_all(lf_config),
        "psy": redact_all(meta),
        "versions": package_versions(),
        "git": git_state(),
        "data": data_sha256 if data_sha256 is not None else
                {str(p): sha256_file(p) for p in data_files if Path(p).is_file()},
        **extra,
    }
    atomic_write_json(run_dir / "manifest.json", manifest)
    return manifest


def record_external(run_dir: Path, identity: dict[str, Any], external: dict[str, Any]) -> None:
    """manifest.json `run` and `external`: a model trained elsewhere, evaluated as this run."""
    manifest = read_manifest(run_dir)
    manifest["run"] = identity
    manifest["external"] = {**external, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(run_dir / "manifest.json", manifest)


def record_identity(run_dir: Path, c: Any) -> None:
    """manifest.json `run`: who the run is (psyfactory.runs reads it back for later commands)."""
    manifest = read_manifest(run_dir)
    manifest["run"] = {"name": c.run, "model": c.model, "task": c.task, "method": c.method, "hw": c.hw,
                       "overrides": c.all_overrides, "recipe": c.recipe}
    atomic_write_json(run_dir / "manifest.json", manifest)


def adapter_sha256(adapter: Path) -> str | None:
    """sha256 of a LoRA adapter's weights (the lineage of merge, GGUF and eval stages names it)."""
    weights = sorted(p for p in Path(adapter).glob("adapter_model.*") if p.suffix in (".safetensors", ".bin"))
    return sha256_file(weights[0]) if weights else None


def merged_from(run_dir: Path) -> str | None:
    """The adapter sha256 the run's merged/ was made from (manifest stage `merge`), or None."""
    return (read_manifest(run_dir).get("stages", {}).get("merge") or {}).get("adapter_sha256")
