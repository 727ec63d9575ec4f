from __future__ import annotations

import pytest

from psyfactory.core.errors import DataError
from psyfactory.core.files import atomic_open, atomic_write_jsonl, read_jsonl


def test_atomic_write_keeps_old_content_on_crash(tmp_path):
    target = tmp_path / "out.jsonl"
    atomic_write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write('{"a": 2}\n')
        raise RuntimeError("crash mid-write")
    assert read_jsonl(target) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"ok": 1}\n{"broken": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        read_jsonl(p)


def test_atomic_write_respects_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write_jsonl(tmp_path / "x.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.jsonl").stat().st_mode) == 0o644
