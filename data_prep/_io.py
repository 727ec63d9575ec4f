"""Atomic writes (re-exported from psyfactory.io) and an advisory file lock for dataset_info.json updates."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psyfactory.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl

__all__ = ["atomic_write_json", "atomic_write_jsonl", "atomic_write_text", "locked", "read_jsonl"]


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock on `<dir>/data/.<name>.lock` (data/ is git-ignored) so concurrent
    read-modify-write updates don't lose entries."""
    lock = path.parent / "data" / f".{path.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
