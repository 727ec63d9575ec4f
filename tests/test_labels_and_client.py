"""Label parsing/validation against a schema, and the OpenAI-compatible client: against a scripted fake
server on loopback (retry paths) and against the session's real `llamafactory-cli api`."""

from __future__ import annotations

import json

import pytest

from psyfactory.core.errors import ConfigError
from psyfactory.core.labels import load_schema
from psyfactory.data_prep.teacher import student_schema

GOOD = {"depression_level": 1, "anxiety_level": 2, "risk_flag": "none", "student_distress_score": 4}


@pytest.mark.parametrize(
    ("text", "reasons", "fenced", "surrounded", "think"),
    [
        (json.dumps(GOOD), [], False, False, False),
        ("```json\n" + json.dumps(GOOD) + "\n```", [], True, False, False),
        ("评估结果如下：" + json.dumps(GOOD, ensure_ascii=False) + " 以上。", [], False, True, False),
        ("<think>先想一想</think>\n" + json.dumps(GOOD), [], False, False, True),
        ("", ["empty"], False, False, False),
        ("<think>never closed", ["empty"], False, False, True),
        ("no json here", ["no_json"], False, False, False),
        ('{"depression_level": 1,', ["invalid_json"], False, False, False),
        ("[1, 2]", ["no_json"], False, False, False),
        (json.dumps({**GOOD, "extra": 1}), ["extra_key:extra"], False, False, False),
        (json.dumps({k: v for k, v in GOOD.items() if k != "risk_flag"}), ["missing_key:risk_flag"], False, False, False),
        (json.dumps({**GOOD, "anxiety_level": 4}), ["out_of_range:anxiety_level"], False, False, False),
        (json.dumps({**GOOD, "student_distress_score": "4"}), ["wrong_type:student_distress_score"], False, False, False),
        (json.dumps({**GOOD, "depression_level": True}), ["wrong_type:depression_level"], False, False, False),
        (json.dumps({**GOOD, "risk_flag": "suicide"}), ["out_of_range:risk_flag"], False, False, False),
    ],
)
def test_parse_student_labels(text, reasons, fenced, surrounded, think):
    p = student_schema().parse(text)
    assert p.reasons == reasons
    assert (p.labels == GOOD) == (not reasons)
    assert (p.extraction.fenced, p.extraction.surrounded, p.extraction.had_think) == (fenced, surrounded, think)


def test_validate_non_object_and_dump_order():
    assert student_schema().reasons([GOOD]) == ["not_object"]
    shuffled = dict(reversed(list(GOOD.items())))
    assert student_schema().dump(shuffled) == json.dumps(GOOD, ensure_ascii=False)


def test_label_schema_kinds_and_errors(tmp_path):
    s = student_schema()
    assert s.ordinal_keys() == ["depression_level", "anxiety_level", "student_distress_score"]
    assert s.categorical_keys() == ["risk_flag"] and s.text_keys() == []
    assert load_schema("evaluation/schemas/es_summary.json").text_keys()[0] == "causes"
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}')
    with pytest.raises(ConfigError, match="field 'x' needs an 'enum'"):
        load_schema(bad)
    with pytest.raises(ConfigError, match="label schema not found"):
        load_schema(tmp_path / "missing.json")


class ScriptedServer:
    """An OpenAI-compatible /v1/chat/completions on loopback that answers from a script."""

    def __init__(self, replies: list[str]) -> None:
        import http.server
        import threading

        self.replies, self.requests, self.headers = list(replies), [], []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                text = outer.replies.pop(0)
                data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()


def _validate(text: str):
    p = student_schema().parse(text)
    return p.labels, p.reasons


def test_client_retries_an_invalid_reply_then_accepts_a_valid_one():
    from psyfactory.core.llm_client import ChatClient, Endpoint

    server = ScriptedServer(["我觉得他有点焦虑。", "```json\n" + json.dumps(GOOD) + "\n```"])
    with server as url:
        result = ChatClient(Endpoint(url, "teacher"), max_tokens=32).complete_json(
            [{"role": "user", "content": "请输出标签"}], _validate, retries=2)
    assert result.ok and result.value == GOOD and result.attempts == 2
    assert result.reasons == [["no_json"]] and len(result.raw) == 2
    assert [r["model"] for r in server.requests] == ["teacher", "teacher"] and server.requests[0]["max_tokens"] == 32


@pytest.mark.slow
def test_client_retries_then_gives_up_against_real_lf_api(lf_api):
    """The random-weight tiny model never answers valid labels: 1 + retries attempts, reasons kept."""
    from psyfactory.core.llm_client import ChatClient

    client = ChatClient(lf_api, max_tokens=12)
    result = client.complete_json([{"role": "user", "content": "请输出标签"}], _validate, retries=2)
    accepted = client.complete_json([{"role": "user", "content": "任意"}], lambda t: (t, []), retries=2)
    assert not result.ok and result.attempts == 3 and len(result.reasons) == 3 and len(result.raw) == 3
    assert all(r and r[0] in {"empty", "no_json", "invalid_json"} for r in result.reasons)
    assert accepted.ok and accepted.attempts == 1 and accepted.value == accepted.raw[0]


def test_a_teacher_url_sends_the_key_from_the_environment(monkeypatch):
    """`--teacher http://…` with only PSY_TEACHER_API_KEY set sends that key (it used to send `Bearer EMPTY`)."""
    from psyfactory.data_prep.teacher import resolve_teacher

    monkeypatch.delenv("PSY_TEACHER_BASE_URL", raising=False)
    monkeypatch.setenv("PSY_TEACHER_API_KEY", "sk-test-42")
    reply = {**GOOD, "student_related": True}  # a teacher's reply: the labels + its relevance verdict
    server = ScriptedServer([json.dumps(reply)])
    with server as url:
        labels = resolve_teacher(url).label("学生：最近考试压力很大。")
    headers = {k.lower(): v for k, v in server.headers[0].items()}
    assert labels == reply and headers["authorization"] == "Bearer sk-test-42"
