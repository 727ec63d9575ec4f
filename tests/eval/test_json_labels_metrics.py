"""json_labels metrics on hand-built parse outcomes (parsing itself: test_json_labels_parse.py)."""

from __future__ import annotations

import pytest

from psyfactory.data_prep.teacher import student_schema
from psyfactory.plugins.json_labels import Parsed
from psyfactory.plugins.json_labels import score as _score


def score(parsed, refs):
    return _score(parsed, refs, student_schema(), "risk_flag", ["suicidal", "self_harm"], min_support=1)


def lab(d: int, a: int, r: str, s: int) -> dict:
    return {"depression_level": d, "anxiety_level": a, "risk_flag": r, "student_distress_score": s}


REFS = [lab(0, 0, "none", 1), lab(2, 1, "suicidal", 7), lab(3, 3, "self_harm", 9), lab(1, 2, "suicidal", 5),
        lab(1, 1, "none", 3)]
PARSED = [
    Parsed(lab(0, 0, "none", 1), fenced=True),
    Parsed(lab(2, 2, "suicidal", 6)),
    Parsed(None, ["out of range: depression_level"], surrounding_text=True),
    Parsed(lab(0, 2, "none", 5)),
    Parsed(None, ["no JSON object"]),
]


def test_json_label_metrics_exact() -> None:
    m = score(PARSED, REFS)
    assert (m["n"], m["valid"], m["fenced"], m["surrounding_text"]) == (5, 3, 1, 1)
    assert m["validity_rate"] == pytest.approx(0.6)
    assert m["failure_reasons"] == {"out of range: depression_level": 1, "no JSON object": 1}
    # invalid outputs are wrong on every field
    assert m["field_accuracy"] == pytest.approx(
        {"depression_level": 2 / 5, "anxiety_level": 2 / 5, "risk_flag": 2 / 5, "student_distress_score": 2 / 5})
    # ordinal metrics on the 3 valid outputs
    assert m["ordinal"]["depression_level"]["mae"] == pytest.approx(1 / 3)
    assert m["ordinal"]["student_distress_score"]["mae"] == pytest.approx(1 / 3)
    # QWK, distress (ref, pred) pairs (1,1), (7,6), (5,5), weights (i-j)^2:
    # observed sum w*O = 1; expected E_ij = 1/3 for refs {1,7,5} x preds {1,6,5}: sum w*E = 99/3 = 33
    assert m["ordinal"]["student_distress_score"]["qwk"] == pytest.approx(1 - 1 / 33)
    # safety recall: suicidal 1 of 2 found, self_harm 0 of 1 (its output was invalid)
    assert m["safety_recall"] == {"suicidal": 0.5, "self_harm": 0.0}
    pc = m["classes"]["risk_flag"]["per_class"]
    assert pc["none"] == {"precision": 0.5, "recall": 0.5, "support": 2}  # idx 4 invalid, idx 3 false alarm
    assert pc["suicidal"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert m["classes"]["risk_flag"]["confusion_labels"][-1] == "(invalid)"
    assert m["classes"]["risk_flag"]["confusion"] == [[1, 0, 0, 0, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]


def test_json_label_edge_cases() -> None:
    # all invalid: ordinal metrics undefined, safety recall stays defined (0) where there is support
    m = score([Parsed(None, ["empty output"])], [lab(1, 1, "self_harm", 4)])
    assert m["validity_rate"] == 0.0 and m["ordinal"]["anxiety_level"] == {"n": 0, "mae": None, "qwk": None}
    assert m["safety_recall"] == {"suicidal": None, "self_harm": 0.0}
    # one class everywhere: kappa is undefined -> None, not a fake 1.0
    m = score([Parsed(lab(1, 1, "none", 4))] * 2, [lab(1, 1, "none", 4)] * 2)
    assert m["ordinal"]["depression_level"] == {"n": 2, "mae": 0.0, "qwk": None}
    assert m["field_accuracy"]["risk_flag"] == 1.0
    # several reasons on one output are each counted once
    m = score([Parsed(None, ["extra key: mood", "extra key: mood", "missing key: risk_flag"])], [lab(0, 0, "none", 0)])
    assert m["failure_reasons"] == {"extra key: mood": 1, "missing key: risk_flag": 1}
    assert score([], [])["n"] == 0


def test_safety_recall_interval_and_measurability() -> None:
    """Recall per safety class with a Wilson interval; under min_support examples it is not measurable."""
    from statsmodels.stats.proportion import proportion_confint

    refs = [lab(2, 2, "suicidal", 7)] * 12 + [lab(2, 2, "self_harm", 7)] * 3 + [lab(0, 0, "none", 1)] * 5
    preds = ([Parsed(lab(2, 2, "suicidal", 7))] * 9 + [Parsed(lab(2, 2, "none", 7))] * 2 + [Parsed(None, ["empty"])]
             + [Parsed(lab(2, 2, "self_harm", 7))] * 2 + [Parsed(lab(2, 2, "none", 7))]
             + [Parsed(lab(0, 0, "suicidal", 1))] + [Parsed(lab(0, 0, "none", 1))] * 4)
    m = _score(preds, refs, student_schema(), "risk_flag", ["suicidal", "self_harm", "violence"])  # default min_support 10
    s = m["safety"]
    assert (s["field"], s["min_support"]) == ("risk_flag", 10)
    sui, sh, vio = (s["classes"][c] for c in ("suicidal", "self_harm", "violence"))
    lo, hi = proportion_confint(9, 12, alpha=0.05, method="wilson")
    assert sui["measurable"] and sui["recall"] == pytest.approx(0.75) and sui["recall_ci95"] == pytest.approx([lo, hi])
    assert (sui["support"], sui["found"], sui["predicted"]) == (12, 9, 10)
    assert sui["precision"] == pytest.approx(0.9)  # one false alarm on a "none" item
    # 3 examples: not measurable, recall null, but the count and the hits are reported
    assert (sh["support"], sh["found"], sh["measurable"], sh["recall"], sh["recall_ci95"]) == (3, 2, False, None, None)
    assert sh["precision"] == 1.0
    assert (vio["support"], vio["recall"], vio["precision"]) == (0, None, None)  # never predicted: no precision
    assert m["safety_recall"] == {"suicidal": pytest.approx(0.75), "self_harm": None, "violence": None}
    m = _score(preds, refs, student_schema(), "risk_flag", ["self_harm"], min_support=3)  # the threshold is an option
    assert m["safety_recall"]["self_harm"] == pytest.approx(2 / 3)
