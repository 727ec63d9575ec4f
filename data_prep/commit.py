"""Committing a prep's outputs so that a reader sees the old dataset or the new one, never a mix.

`make prep` builds every requested task in memory first (a missing source fails before anything is
written), then:
1. writes each output file complete, under a staged name next to its final one
   (`data/<task>/.<name>.prep-<token>`);
2. writes the journal `data/.prep-commit.json` (atomically): the renames, the merged
   `dataset_info.json` and `prep_accounting.json`. The journal existing is the commit point;
3. renames the staged files into place, writes the two registry files, deletes the journal.
A prep killed before step 2 leaves only staged files, which the next prep deletes; killed during
step 3, it leaves the journal, which the next prep replays first. While a journal exists, readers
(preflight, eval) refuse the data with one line saying to rerun `make prep`.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from psyfactory.core.errors import DataError
from psyfactory.core.files import atomic_write_json, atomic_write_jsonl, locked

JOURNAL = ".prep-commit.json"
_rename = os.replace  # the commit's renames (a test stands in a crash here)


def journal_path(dataset_dir: Path) -> Path:
    return dataset_dir / "data" / JOURNAL


def check_not_mid_commit(dataset_dir: Path) -> None:
    """For readers: refuse a dataset whose last prep stopped while committing."""
    if journal_path(dataset_dir).exists():
        raise DataError(f"{journal_path(dataset_dir)}: a `make prep` stopped while committing its outputs, so "
                        "data/ may hold a mix of two preps; run `make prep` again (it finishes that commit first)")


class Commit:
    """Stage files, then commit them together with the dataset_info / accounting updates."""

    def __init__(self, dataset_dir: Path) -> None:
        self.dataset_dir = dataset_dir
        self.token = secrets.token_hex(4)
        self.renames: list[tuple[str, str]] = []  # (staged, final), relative to dataset_dir

    def _staged(self, final: Path) -> Path:
        staged = final.with_name(f".{final.name}.prep-{self.token}")
        self.renames.append((str(staged.relative_to(self.dataset_dir)), str(final.relative_to(self.dataset_dir))))
        return staged

    def write_jsonl(self, final: Path, records: list[dict[str, Any]]) -> None:
        atomic_write_jsonl(self._staged(final), records)

    def write_json(self, final: Path, obj: Any) -> None:
        atomic_write_json(self._staged(final), obj)

    def commit(self, info_entries: dict[str, dict[str, Any]], accounting: dict[str, Any]) -> None:
        info_path = self.dataset_dir / "dataset_info.json"
        with locked(info_path):
            info = read_info(info_path)
            info.update(info_entries)  # existing keys keep their place, new ones are appended
            report = self.dataset_dir / "data" / "prep_accounting.json"
            old = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
            journal = {"renames": self.renames, "dataset_info": info,
                       "accounting": dict(sorted({**old, **accounting}.items()))}
            atomic_write_json(journal_path(self.dataset_dir), journal)  # the commit point
            replay(self.dataset_dir)


def read_info(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg}); fix or remove it") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: top level must be an object")
    return info


def replay(dataset_dir: Path) -> bool:
    """Finish a committed prep (idempotent): renames, registry files, journal removed. False: none."""
    jpath = journal_path(dataset_dir)
    if not jpath.exists():
        return False
    journal = json.loads(jpath.read_text(encoding="utf-8"))
    for staged, final in journal["renames"]:
        if (dataset_dir / staged).exists():
            _rename(dataset_dir / staged, dataset_dir / final)
    atomic_write_json(dataset_dir / "dataset_info.json", journal["dataset_info"])
    atomic_write_json(dataset_dir / "data" / "prep_accounting.json", journal["accounting"])
    jpath.unlink()
    return True


def clean_orphans(dataset_dir: Path) -> list[Path]:
    """Before a prep: replay a committed one, then delete staged files and temp files that a killed
    prep left behind (`.*.prep-*`, `.*.tmp`). Returns what was removed."""
    data = dataset_dir / "data"
    if replay(dataset_dir):
        print(f"[prep] finished the commit of an interrupted prep ({journal_path(dataset_dir).name})")
    removed = []
    if data.is_dir():
        for path in [*data.rglob(".*.prep-*"), *data.rglob(".*.tmp")]:
            if path.is_file():
                path.unlink()
                removed.append(path)
    if removed:
        print(f"[prep] removed {len(removed)} file(s) an interrupted prep left behind under {data}")
    return removed
