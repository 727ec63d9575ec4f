"""Student label parsing/validation, and the OpenAI-compatible client against a real local server."""

from __future__ import annotations

import json

import pytest

from psyfactory.labels import dump_labels, parse_student_labels, validate_student_labels

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
    p = parse_student_labels(text)
    assert p.reasons == reasons
    assert (p.labels == GOOD) == (not reasons)
    assert (p.extraction.fenced, p.extraction.surrounded, p.extraction.had_think) == (fenced, surrounded, think)


def test_validate_non_object_and_dump_order():
    assert validate_student_labels([GOOD]) == ["not_object"]
    shuffled = dict(reversed(list(GOOD.items())))
    assert dump_labels(shuffled) == json.dumps(GOOD, ensure_ascii=False)


@pytest.mark.slow
def test_client_retries_then_gives_up_against_real_lf_api(tiny_model, tmp_path):
    """The random-weight tiny model never answers valid labels: 1 + retries attempts, reasons kept."""
    from psyfactory.llm_client import ChatClient, serve_lf_api

    def validate(text: str):
        p = parse_student_labels(text)
        return p.labels, p.reasons

    with serve_lf_api(tiny_model, "qwen3", extra={"enable_thinking": False}, log_path=tmp_path / "api.log") as ep:
        client = ChatClient(ep, max_tokens=12)
        result = client.complete_json([{"role": "user", "content": "请输出标签"}], validate, retries=2)
        accepted = client.complete_json([{"role": "user", "content": "任意"}], lambda t: (t, []), retries=2)
    assert not result.ok and result.attempts == 3 and len(result.reasons) == 3 and len(result.raw) == 3
    assert all(r and r[0] in {"empty", "no_json", "invalid_json"} for r in result.reasons)
    assert accepted.ok and accepted.attempts == 1 and isinstance(accepted.value, str)
