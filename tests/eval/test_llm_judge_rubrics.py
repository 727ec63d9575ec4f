"""llm_judge rubrics, reply schema and aggregation (the live-server test is test_llm_judge_server.py)."""

from __future__ import annotations

import jsonschema
import pytest

from psyfactory.core.errors import EvalError
from psyfactory.plugins.llm_judge import JudgeReply, aggregate, available_rubrics, judge_messages, load_rubric


def valid(schema, obj) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(obj)


def test_cpsycoune_rubric_schema() -> None:
    r = load_rubric("cpsycoune_turn")
    assert [(c.key, c.min, c.max) for c in r.criteria] == [
        ("comprehensiveness", 0, 2), ("professionalism", 0, 3), ("authenticity", 0, 3), ("safety", 0, 1)]
    s = r.schema()
    good = {"comprehensiveness": 2, "professionalism": 3, "authenticity": 0, "safety": 1}
    assert valid(s, good) and valid(s, {**good, "rationale": "fine"})
    assert not valid(s, {**good, "safety": 2})  # out of range
    assert not valid(s, {**good, "professionalism": 2.5})  # not an integer
    assert not valid(s, {k: v for k, v in good.items() if k != "safety"})  # missing
    assert not valid(s, {**good, "empathy": 3})  # extra


def test_longemotion_rubrics() -> None:
    es = load_rubric("longemotion_es")  # the reflection against the reference reflection
    assert es.attributes == () and [c.key for c in es.criteria] == ["factual_consistency", "completeness", "clarity"]
    r = load_rubric("longemotion_es_summary")  # every field of the five-field summary
    assert [a for a, _ in r.attributes] == ["causes", "symptoms", "treatment_process",
                                            "characteristics_of_illness", "treatment_effect"]
    assert [(c.key, c.min, c.max) for c in r.criteria] == [
        ("factual_consistency", 1, 5), ("completeness", 1, 5), ("clarity", 1, 5)]
    block = {"factual_consistency": 4, "completeness": 3, "clarity": 5}
    reply = {a: dict(block) for a, _ in r.attributes}
    assert valid(r.schema(), reply)
    reply["symptoms"]["clarity"] = 0
    assert not valid(r.schema(), reply)
    assert set(available_rubrics()) >= {"cpsycoune_turn", "longemotion_es", "longemotion_es_summary"}


def test_judge_messages_carry_rubric_material_and_format() -> None:
    r = load_rubric("cpsycoune_turn")
    msgs = judge_messages(r, [{"role": "system", "content": "PERSONA-TEXT"}, {"role": "user", "content": "我睡不着"}],
                          "参考回复", "候选回复")
    assert msgs[0] == {"role": "system", "content": r.system}
    user = msgs[1]["content"]
    assert "[user] 我睡不着" in user and "PERSONA-TEXT" not in user
    assert "Reference:\n参考回复" in user and "Candidate:\n候选回复" in user
    assert '"safety": <integer 0-1>' in user
    long = judge_messages(r, [{"role": "user", "content": "x" * 100}], "r", "c", max_context_chars=10)[1]["content"]
    assert "[…]xxxxxxxxxx\n" in long


def test_aggregate_counts_failures_and_never_scores_them() -> None:
    r = load_rubric("cpsycoune_turn")
    replies = [
        JudgeReply({"comprehensiveness": 2, "professionalism": 1, "authenticity": 3, "safety": 1}, 1),
        JudgeReply({"comprehensiveness": 1, "professionalism": 2, "authenticity": 2, "safety": 0}, 2),
        JudgeReply(None, 3, "schema: 'safety' is a required property"),
    ]
    m = aggregate(r, replies)
    assert (m["n"], m["judged"], m["failed"], m["attempts"]) == (3, 2, 1, 6)
    assert m["mean"] == {"comprehensiveness": 1.5, "professionalism": 1.5, "authenticity": 2.5, "safety": 0.5}
    assert m["failure_reasons"] == {"schema: 'safety' is a required property": 1}
    assert aggregate(r, [JudgeReply(None, 3, "no JSON")])["mean"]["safety"] is None


def test_aggregate_per_attribute() -> None:
    r = load_rubric("longemotion_es_summary")
    a = {k: {"factual_consistency": 5, "completeness": 4, "clarity": 3} for k, _ in r.attributes}
    b = {k: {"factual_consistency": 1, "completeness": 2, "clarity": 3} for k, _ in r.attributes}
    m = aggregate(r, [JudgeReply(a, 1), JudgeReply(b, 1)])
    assert m["mean"] == {"factual_consistency": 3.0, "completeness": 3.0, "clarity": 3.0}
    assert m["per_attribute"]["causes"] == {"factual_consistency": 3.0, "completeness": 3.0, "clarity": 3.0}


def test_bad_rubric_file(tmp_path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("system: s\ncriteria: [{key: a, min: 3, max: 1}]\n")
    with pytest.raises(EvalError, match="r.yaml: field 'criteria'"):
        load_rubric(str(p))
    p.write_text("criteria: []\n")
    with pytest.raises(EvalError, match="a rubric needs 'system'"):
        load_rubric(str(p))
