"""Entries of a `dataset_info.json`, checked before LLaMA-Factory or an evaluation reads them.

`make prep` writes the registry; people edit it by hand too. Each entry a run names is checked for
what would otherwise fail after the model has loaded, or read a file it should not: `file_name`
relative and inside the dataset folder, a known `formatting`, `columns` / `tags` of LLaMA-Factory's
names, and (where the file is there) its first record holding the mapped columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psyfactory.core.errors import PreflightError

FORMATTINGS = ("alpaca", "sharegpt", "openai")
COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
           "chosen", "rejected", "kto_tag"}
TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}


def read_info(dataset_dir: Path, *, builtin: bool = False) -> dict[str, Any]:
    """The folder's registry. With `builtin`, a folder where nothing was prepared yet (no dataset_info.json)
    is read as the built-in registry, the entries `make prep` writes there for the built-in tasks: a check of
    names before the data exist (`psyfactory config` in an empty working folder of an installed package)."""
    from psyfactory.core import paths
    from psyfactory.data_prep.commit import check_not_mid_commit

    check_not_mid_commit(dataset_dir)
    path = dataset_dir / "dataset_info.json"
    if not path.is_file():
        if not (builtin and paths.BUILTIN_DATASET_INFO.is_file()):
            raise PreflightError(f"{path}: missing (run `make prep` first, or set PSY_DATASET_DIR)")
        path = paths.BUILTIN_DATASET_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PreflightError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise PreflightError(f"{path}: not UTF-8") from None
    if not isinstance(info, dict):
        raise PreflightError(f"{path}: top level must be an object of dataset entries")
    return info


def entry(name: str, dataset_dir: Path, *, need_file: bool = True) -> tuple[dict[str, Any], Path]:
    """(the checked entry, its data file) of dataset `name`; every problem is one PreflightError naming
    dataset_info.json and the entry. Without need_file, a folder with no dataset_info.json yet is checked
    against the built-in registry (read_info)."""
    info = read_info(dataset_dir, builtin=not need_file)
    where = f"{dataset_dir / 'dataset_info.json'}: dataset '{name}'"
    if name not in info:
        raise PreflightError(f"{dataset_dir / 'dataset_info.json'}: dataset '{name}' is not registered "
                             f"(registered: {', '.join(sorted(info)) or 'none'}; run `{prep_command(name)}`)")
    e = info[name]
    if not isinstance(e, dict):
        raise PreflightError(f"{where}: an entry is an object with a file_name")
    fname = e.get("file_name")
    if not isinstance(fname, str) or not fname.strip():
        raise PreflightError(f"{where}: no file_name")
    path = (dataset_dir / fname).resolve()
    if Path(fname).is_absolute() or not path.is_relative_to(dataset_dir.resolve()):
        raise PreflightError(f"{where}: file_name {fname!r} points outside the dataset folder {dataset_dir} (a relative "
                             "path inside it, as `make prep` writes)")
    fmt = e.get("formatting", "alpaca")
    if fmt not in FORMATTINGS:
        raise PreflightError(f"{where}: formatting {fmt!r}; LLaMA-Factory reads {', '.join(FORMATTINGS)}")
    for key, known in (("columns", COLUMNS), ("tags", TAGS)):
        block = e.get(key, {})
        if not isinstance(block, dict) or any(not isinstance(v, str) for v in block.values()):
            raise PreflightError(f"{where}: {key} must map names to column names (text)")
        if bad := sorted(set(block) - known):
            raise PreflightError(f"{where}: {key} has unknown name(s) {', '.join(bad)} (LLaMA-Factory's: "
                                 f"{', '.join(sorted(known))})")
    if need_file:
        if not path.is_file():
            raise PreflightError(f"dataset '{name}': data file {path} is missing (run `{prep_command(name)}`)")
        _first_record_fits(name, e, path, fmt)
    return e, path


def prep_command(dataset: str) -> str:
    """The command that writes a dataset: a recipe's own data (`<recipe>_<split>`) or a task's (`<task>_<split>`)."""
    from psyfactory.layers import list_names

    for kind, arg in (("recipe", "RECIPE"), ("task", "TASK")):
        owners = [n for n in list_names(kind) if dataset.startswith(f"{n}_")]
        if owners:
            return f"make prep {arg}={max(owners, key=len)}"
    return "make prep"


def _first_record_fits(name: str, e: dict[str, Any], path: Path, fmt: str) -> None:
    """The first JSONL record holds the columns the entry maps (a JSON array is not opened: it may be large)."""
    if path.suffix != ".jsonl":
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        line = next((ln for ln in fh if ln.strip()), "")
    if not line:
        raise PreflightError(f"dataset '{name}': {path} is empty")
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise PreflightError(f"dataset '{name}': {path}: line 1: invalid JSON ({err.msg})") from None
    cols = e.get("columns", {})
    need = [cols.get("messages", "conversations")] if fmt != "alpaca" else [cols.get("prompt", "instruction"),
                                                                           cols.get("response", "output")]
    missing = [c for c in need if not isinstance(rec, dict) or c not in rec]
    if missing:
        raise PreflightError(f"dataset '{name}': {path}: line 1 has no field {', '.join(map(repr, missing))} that "
                             f"dataset_info.json's columns name for it")
