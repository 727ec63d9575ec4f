"""json_labels plugin end to end on hand-written raw outputs (parsing by psyfactory.labels)."""

from __future__ import annotations

import json

import pytest

from psyfactory.core.errors import EvalError
from psyfactory.data_prep.teacher import student_schema
from psyfactory.plugins import EvalContext, Sample, TaskInfo, get_plugin
from psyfactory.plugins.json_labels import Options

SAFETY = Options(safety_field="risk_flag", safety_classes=["suicidal", "self_harm"], min_support=1)


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
    res = get_plugin("json_labels").run(EvalContext(TaskInfo("student", label_schema=student_schema()), tmp_path,
                                                    samples, [o for _, o in CASES], options=SAFETY))
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
    assert m["classes"]["risk_flag"]["per_class"]["violence"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert (tmp_path / "risk_flag_confusion.png").is_file()
    r = res.report
    assert r.index("| suicidal | 2 | 1 | 0.5000 | [0.095, 0.905] |") < r.index("valid JSON labels: 4 (57.14%)")
    assert "| self_harm | 1 | 1 | 1.0000 | [0.207, 1.000] |" in r
    assert [it["valid"] for it in res.items] == [True, True, True, False, False, False, True]
    paired = get_plugin("json_labels").paired(res.items)
    assert set(paired) == {*student_schema().keys, "risk_flag:flagged"}  # + flagged at all, when the reference is
    # a safety class or none (safety_classes here: suicidal, self_harm; the violence item has no such record)
    assert len(paired["risk_flag:flagged"]) == 6
    assert [paired["risk_flag"][str(i)] for i in range(7)] == [True, True, True, False, False, False, False]


def test_json_labels_rejects_bad_reference(tmp_path) -> None:
    samples = [Sample("s1", [], '{"depression_level": 1}')]
    with pytest.raises(EvalError, match=r"sample s1: reference lacks fields \['anxiety_level'"):
        get_plugin("json_labels").run(EvalContext(TaskInfo("student", label_schema=student_schema()), tmp_path, samples, ["{}"]))


def test_json_labels_works_for_any_flat_label_schema(tmp_path) -> None:
    """A new label task needs only its schema file: fields, ordinal/categorical kinds come from it."""
    from psyfactory.core.labels import load_schema

    path = tmp_path / "crisis.json"
    path.write_text(json.dumps({"type": "object", "additionalProperties": False, "required": ["crisis", "urgency"],
                                "properties": {"crisis": {"type": "string", "enum": ["no", "yes"]},
                                               "urgency": {"type": "integer", "enum": [0, 1, 2]}}}))
    schema = load_schema(path)
    refs = [{"crisis": "yes", "urgency": 2}, {"crisis": "no", "urgency": 0}, {"crisis": "yes", "urgency": 1}]
    outs = ['{"crisis": "yes", "urgency": 2}', '{"crisis": "yes", "urgency": 0}', "not json"]
    samples = [Sample(str(i), [], json.dumps(r)) for i, r in enumerate(refs)]
    res = get_plugin("json_labels").run(EvalContext(TaskInfo("crisis", label_schema=schema), tmp_path, samples, outs,
                                                    options=Options(safety_field="crisis", safety_classes=["yes"],
                                                                    min_support=1)))
    m = res.metrics
    assert m["valid"] == 2 and m["safety_recall"] == {"yes": 0.5}
    assert m["field_accuracy"] == pytest.approx({"crisis": 1 / 3, "urgency": 2 / 3})
    assert set(m["ordinal"]) == {"urgency"} and set(m["classes"]) == {"crisis"}
    assert (tmp_path / "crisis_confusion.png").is_file()
    with pytest.raises(EvalError, match="safety_field 'risk_flag' is not a categorical field"):
        get_plugin("json_labels").run(EvalContext(TaskInfo("crisis", label_schema=schema), tmp_path, samples, outs,
                                                  options=SAFETY))
