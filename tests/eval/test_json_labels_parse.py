"""json_labels plugin end to end on hand-written raw outputs (parsing by psyfactory.labels)."""

from __future__ import annotations

import json

import pytest

from plugins import EvalContext, Sample, get_plugin


def lab(d, a, r, s) -> dict:
    return {"depression_level": d, "anxiety_level": a, "risk_flag": r, "student_distress_score": s}


CASES = [  # (reference, raw model output)
    (lab(0, 1, "none", 2), json.dumps(lab(0, 1, "none", 2))),
    (lab(3, 2, "suicidal", 9), "```json\n" + json.dumps(lab(3, 2, "suicidal", 8)) + "\n```"),  # fenced
    (lab(2, 2, "self_harm", 7), "评估如下：" + json.dumps(lab(2, 1, "self_harm", 7)) + "。"),  # surrounding text
    (lab(1, 2, "violence", 6), ""),  # empty output
    (lab(1, 0, "none", 2), json.dumps({**lab(1, 0, "none", 2), "mood": "ok"})),  # extra key
    (lab(1, 3, "none", 5), json.dumps(lab(1, 4, "none", 5))),  # out of range
    (lab(2, 2, "suicidal", 8), json.dumps(lab(2, 2, "none", 8))),  # valid but misses the risk
]


def test_json_labels_plugin_on_raw_outputs(tmp_path) -> None:
    samples = [Sample(str(i), [{"role": "user", "content": "x"}], json.dumps(r)) for i, (r, _) in enumerate(CASES)]
    res = get_plugin("json_labels").run(EvalContext("student", tmp_path, samples, [o for _, o in CASES]))
    m = res.metrics
    assert (m["n"], m["valid"], m["fenced"], m["surrounding_text"]) == (7, 4, 1, 1)
    assert m["failure_reasons"] == {"empty": 1, "extra_key:mood": 1, "out_of_range:anxiety_level": 1}
    assert m["failure_kinds"] == {"empty": 1, "extra_key": 1, "out_of_range": 1}
    # risk_flag right on items 0, 1, 2 -> 3/7; distress right on 0, 2, 6 -> 3/7
    assert m["field_accuracy"]["risk_flag"] == pytest.approx(3 / 7)
    assert m["field_accuracy"]["student_distress_score"] == pytest.approx(3 / 7)
    assert m["field_accuracy"]["anxiety_level"] == pytest.approx(3 / 7)  # items 0, 1, 6
    assert m["ordinal"]["anxiety_level"]["mae"] == pytest.approx(1 / 4)  # valid: 0, 1, 2, 6
    assert m["safety_recall"] == {"suicidal": 0.5, "self_harm": 1.0}
    assert m["risk_flag"]["per_class"]["violence"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert (tmp_path / "risk_flag_confusion.png").is_file()
    r = res.report
    assert r.index("on `suicidal` = **0.5000**, on `self_harm` = **1.0000**") < r.index("valid JSON labels: 4 (57.14%)")
    assert [it["valid"] for it in res.items] == [True, True, True, False, False, False, True]


def test_json_labels_rejects_bad_reference(tmp_path) -> None:
    samples = [Sample("s1", [], '{"depression_level": 1}')]
    with pytest.raises(ValueError, match=r"sample s1: reference lacks fields \['anxiety_level'"):
        get_plugin("json_labels").run(EvalContext("student", tmp_path, samples, ["{}"]))
