"""Teacher faults against a fake OpenAI-compatible server on loopback: a server that fails or answers
garbage must not replace a good student set, malformed bodies are invalid answers (not tracebacks),
a silent server times out within the configured bound, and the set records who labelled it."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dp_helpers import SAMPLES, quarantine

from psyfactory.core.llm_client import ChatClient, Endpoint
from psyfactory.data_prep import DataError, prepare
from psyfactory.data_prep.teacher import TeacherEndpoint

GOOD = {"depression_level": 1, "anxiety_level": 2, "risk_flag": "none", "student_distress_score": 4,
        "student_related": True}
Reply = tuple[int, str, bytes]


def completion(text: str) -> Reply:
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}
    return 200, "application/json", json.dumps(body).encode()


class FaultServer:
    """/v1/chat/completions whose n-th answer is `behaviour(n)`: (status, content type, body) or "hang"."""

    def __init__(self, behaviour: Callable[[int], Reply | str]) -> None:
        self.count = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.count += 1
                reply = behaviour(outer.count)
                if reply == "hang":
                    time.sleep(3)
                    return
                status, ctype, data = reply
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()


def teacher(url: str, model: str = "fake-teacher", **kw) -> TeacherEndpoint:
    return TeacherEndpoint(Endpoint(url, model, timeout=kw.pop("timeout", 5), max_retries=0),
                           retries=kw.pop("retries", 0), workers=1, **kw)


def student_files(ds: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((ds / "data" / "student").glob("*.jsonl"))} | {
        "dataset_info.json": (ds / "dataset_info.json").read_bytes()}


@pytest.fixture
def good_set(tmp_path: Path) -> Path:
    ds = tmp_path / "ds"
    with FaultServer(lambda n: completion(json.dumps(GOOD))) as url:
        prepare(["student"], SAMPLES, ds, teacher=teacher(url), quiet=True)
    assert (ds / "data" / "student" / "train.jsonl").read_text(encoding="utf-8").strip()
    return ds


HTML = (200, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>")
EMPTY_CHOICES = (200, "application/json", json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                                                      "model": "m", "choices": []}).encode())
ERROR_500 = (500, "application/json", b'{"error": {"message": "internal error"}}')


@pytest.mark.parametrize(("reply", "reason"), [
    (ERROR_500, "InternalServerError"),
    (completion("I cannot help with that."), "no_json"),
    (HTML, "malformed_response"),
    (EMPTY_CHOICES, "malformed_response"),
    # the 4 labels without saying whether the text is about a student
    (completion(json.dumps({k: v for k, v in GOOD.items() if k != "student_related"})), "missing_key:student_related"),
])
def test_a_failing_teacher_keeps_the_previous_set(good_set: Path, reply: Reply, reason: str) -> None:
    before = student_files(good_set)
    with FaultServer(lambda n: reply) as url, pytest.raises(DataError) as exc:
        # another model: the good run's cached labels do not apply, every item is asked
        prepare(["student"], SAMPLES, good_set, teacher=teacher(url, "broken-teacher"), quiet=True)
    msg = str(exc.value)
    assert "7 of 7 answers invalid (100%, above the 20% limit PSY_TEACHER_MAX_INVALID)" in msg, msg
    assert "the previous student set is kept" in msg and reason in msg and "\n" not in msg
    assert student_files(good_set) == before


def test_malformed_bodies_are_invalid_answers_not_tracebacks() -> None:
    def validate(text: str):
        return (json.loads(text), []) if text.startswith("{") else (None, ["no_json"])

    script = [HTML, EMPTY_CHOICES, completion(json.dumps(GOOD))]
    with FaultServer(lambda n: script[n - 1]) as url:
        res = ChatClient(Endpoint(url, "m", max_retries=0)).complete_json([{"role": "user", "content": "x"}],
                                                                          validate, retries=2)
    assert res.ok and res.value == GOOD and res.attempts == 3
    assert [r[0].split(":")[0] for r in res.reasons] == ["malformed_response", "malformed_response"]


def test_a_silent_server_times_out_within_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from psyfactory.data_prep.teacher import endpoint_from_env

    with FaultServer(lambda n: "hang") as url:
        monkeypatch.setenv("PSY_TEACHER_BASE_URL", url)
        monkeypatch.setenv("PSY_TEACHER_TIMEOUT", "0.5")
        monkeypatch.setenv("PSY_TEACHER_HTTP_RETRIES", "0")
        te = endpoint_from_env()
        assert te is not None and te.endpoint.timeout == 0.5 and te.endpoint.max_retries == 0
        t0 = time.perf_counter()
        with pytest.raises(DataError, match=r"did not answer within 0.5 s \(0 HTTP retries\); set PSY_TEACHER_TIMEOUT"):
            prepare(["student"], SAMPLES, tmp_path / "ds", teacher=te, quiet=True)
        assert time.perf_counter() - t0 < 3  # one request, not 120 s x 3
    assert not (tmp_path / "ds" / "data" / "student" / "train.jsonl").exists()
    monkeypatch.setenv("PSY_TEACHER_TIMEOUT", "soon")
    with pytest.raises(Exception, match="PSY_TEACHER_TIMEOUT='soon' is not a number"):
        endpoint_from_env()


def test_a_few_invalid_answers_are_quarantined_and_the_teacher_recorded(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    with FaultServer(lambda n: completion("?") if n == 3 else completion(json.dumps(GOOD))) as url:
        prepare(["student"], SAMPLES, ds, teacher=teacher(url), quiet=True)  # 1 of 7 invalid: 14% <= 20%
    q = [x for x in quarantine(ds, "student") if x["reason"] == "teacher_invalid"]
    assert len(q) == 1 and "no_json" in q[0]["detail"]
    accounting = json.loads((ds / "data" / "student" / "accounting.json").read_text(encoding="utf-8"))
    who = accounting[0]["labelled_by"]
    assert who["model"] == "fake-teacher" and who["base_url"] == url and who["decoding"]["temperature"] == 0.0
    assert who["prompt_file"] == "data_prep/prompts/student_teacher.md" and len(who["prompt_sha256"]) == 64
    assert "api_key" not in json.dumps(accounting)
