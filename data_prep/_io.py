"""Atomic writes (psyfactory.io once the spine lands) and an advisory file lock."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    from psyfactory.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl
except ImportError:  # TEMPORARY until the spine's psyfactory.io is merged
    import json
    import os
    import tempfile

    def atomic_write_text(path, text):  # type: ignore[no-redef]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)

    def atomic_write_json(path, obj, indent=2):  # type: ignore[no-redef]
        atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")

    def atomic_write_jsonl(path, records):  # type: ignore[no-redef]
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
        atomic_write_text(path, "".join(lines))
        return len(lines)

    def read_jsonl(path):  # type: ignore[no-redef]
        return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]

__all__ = ["atomic_write_json", "atomic_write_jsonl", "atomic_write_text", "locked", "read_jsonl"]


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock on `<path>.lock` so concurrent read-modify-write updates don't lose entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
