"""The student teacher against a real OpenAI-compatible server on loopback (`llamafactory-cli api`
on the random-weight tiny model): its answers are invalid, so the prep fails unless the invalid share
is allowed, and then every item is retried then quarantined."""

from __future__ import annotations

import json

import pytest
from dp_helpers import SAMPLES, quarantine

from psyfactory.data_prep import DataError, prepare
from psyfactory.data_prep.teacher import TeacherEndpoint


@pytest.mark.slow
def test_invalid_teacher_answers_are_retried_then_quarantined(lf_api, tmp_path):
    from psyfactory.core.llm_client import Endpoint, free_port

    with pytest.raises(DataError, match=r"7 of 7 answers invalid \(100%, above the 20% limit"):
        prepare(["student"], SAMPLES, tmp_path / "ds0", teacher=TeacherEndpoint(lf_api, retries=0, max_tokens=16),
                quiet=True)
    assert not (tmp_path / "ds0" / "data" / "student" / "train.jsonl").exists()
    # max_invalid=1.0 accepts any share: every item retried, then quarantined
    te = TeacherEndpoint(lf_api, retries=1, workers=2, max_tokens=16, max_invalid=1.0)
    res = prepare(["student"], SAMPLES, tmp_path / "ds", teacher=te, quiet=True)
    accs = res["student"]
    assert sum(a.written for a in accs) == 0
    q = [x for x in quarantine(tmp_path / "ds", "student") if x["reason"] == "teacher_invalid"]
    assert len(q) == sum(a.quarantined["teacher_invalid"] for a in accs) == 7  # every on-topic sample item
    for x in q:
        assert x["detail"].startswith("invalid after 2 attempts: [")  # 1 + retries, with reason codes
    assert not (tmp_path / "ds" / "data" / "student" / "labels_cache.jsonl").exists()
    info = json.loads((tmp_path / "ds" / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["student_train"]["file_name"] == "data/student/train.jsonl"
    # no server listening: a clear error instead of quarantining everything
    dead = TeacherEndpoint(Endpoint(base_url=f"http://127.0.0.1:{free_port()}/v1", model="x", timeout=5), retries=0,
                           workers=1)
    with pytest.raises(DataError, match="teacher endpoint http://127.0.0.1:.*APIConnectionError"):
        prepare(["student"], SAMPLES, tmp_path / "ds2", teacher=dead, quiet=True)
