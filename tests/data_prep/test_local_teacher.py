"""`make teacher` + `make prep TASK=student TEACHER=local`: a real model (SmolLM2-135M-Instruct, the
Q4_1 GGUF of its PyPI package) served by llama-cpp-python on loopback labels a slice of the shared
samples (the first 40 CPsyCounD cases and 20 PsyQA questions: the whole 747 on-topic items take ~40
min on 2 CPU cores; benchmarks/teacher_bench.py measures more), with the label schema as the
response format, so every answer parses; the set records who labelled it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dp_helpers import SAMPLES, SHARED, need_shared, quarantine
from psyutil import cli, one_error_line

from psyfactory import gguf
from psyfactory.core.paths import REPO_ROOT
from psyfactory.data_prep.teacher import student_schema

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not gguf.available(), reason="GGUF stack not installed: run "
                                                                                  "`make setup-gguf`")]


def shared_slice(root: Path, n_cases: int = 40, n_questions: int = 20) -> Path:
    """A raw folder with the first cases / questions of the shared samples (links and a subset file, in tmp)."""
    need_shared()
    cases = root / "CPsyCoun" / "CPsyCounD" / "Data"
    cases.mkdir(parents=True)
    for i in range(n_cases):
        (cases / f"case_{i}.txt").symlink_to(SHARED / "CPsyCoun" / "CPsyCounD" / "Data" / f"case_{i}.txt")
    (root / "PsyQA").mkdir()
    questions = json.loads((SHARED / "PsyQA" / "PsyQA_example.json").read_text(encoding="utf-8"))[:n_questions]
    (root / "PsyQA" / "PsyQA_example.json").write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    return root


def test_student_labels_from_the_real_local_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from psyfactory.smollm2 import gguf_file

    raw = shared_slice(tmp_path / "raw")

    model = gguf_file()
    cache = tmp_path / "cache"
    monkeypatch.setenv("PSY_CACHE_DIR", str(cache))
    state = cache / "teacher" / "local.json"
    ds = tmp_path / "ds"
    server = subprocess.Popen([sys.executable, "-m", "psyfactory", "teacher", "--gguf", str(model)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while not state.is_file():
            assert server.poll() is None and time.time() < deadline, server.stdout.read() if server.stdout else ""
            time.sleep(0.5)
        cli("prep", "--task", "student", "--raw-dir", str(raw), "--dataset-dir", str(ds), "--teacher", "local")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not state.exists()  # removed when the server stops
    rows = [json.loads(line) for split in ("train", "eval")
            for line in (ds / "data" / "student" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    accounting = json.loads((ds / "data" / "student" / "accounting.json").read_text(encoding="utf-8"))
    assert len(rows) == sum(a["written"] for a in accounting) >= 5
    assert not [q for q in quarantine(ds, "student") if q["reason"] == "teacher_invalid"]
    for a in accounting:  # every asked item got a schema-valid reply, the student_related verdict included
        assert a["steps"]["teacher valid"] == a["steps"]["student keyword"] > 0, a["steps"]
    assert all(student_schema().reasons(json.loads(r["output"])) == [] for r in rows)  # 100% schema-valid
    who = accounting[0]["labelled_by"]
    assert who["model"] == "teacher" and who["decoding"]["response_format"] == "json_object"
    assert who["served"]["gguf_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # no server any more: one error line that says how to start one
    line = one_error_line(cli("prep", "--task", "student", "--raw-dir", str(SAMPLES), "--dataset-dir", str(ds),
                              "--teacher", "local", check=False))
    assert "no local teacher is running" in line and "make teacher" in line
