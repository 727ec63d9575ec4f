"""The crisis lexicon at prep time, and the offline heuristic labeller.

The lexicon and its matcher are shared with inference: `evaluation/safety/crisis_lexicon.yaml`, read
by `psyfactory.core.safety` (negations such as 我从没想过自杀, figures of speech such as 想死你了 and
reports about someone else such as 我同学说他想自杀 do not count; counselor lines are not read).
`raise_risk` uses it to RAISE a teacher's `risk_flag` (never to lower it). The heuristic labeller is
a deterministic keyword baseline for offline demos and tests: it is NOT a real labeller and must not
be used to build training data for real models.
"""

from __future__ import annotations

from psyfactory.core.safety import load_lexicon

RISK_ORDER = ("none", "violence", "self_harm", "suicidal")  # ascending severity

DEPRESSION_WORDS = ("抑郁", "难过", "绝望", "没有意义", "提不起兴趣", "失眠", "哭", "自责", "空虚", "低落",
                    "无助", "痛苦", "没意思", "伤心")
ANXIETY_WORDS = ("焦虑", "紧张", "担心", "害怕", "恐惧", "压力", "心慌", "不安", "慌", "睡不着", "崩溃")


def detect_risk(text: str) -> tuple[str, str]:
    """(most severe risk category of the writer's own crisis language, matched phrase) or ("none", "")."""
    found, hit = load_lexicon().detect(text)
    return found, hit.phrase if hit else ""


def raise_risk(labels: dict, text: str) -> tuple[dict, str]:
    """Apply the lexicon: returns (labels, matched phrase if it changed risk_flag else '')."""
    found, phrase = detect_risk(text)
    current = labels.get("risk_flag", "none")
    if current == "none" and found != "none":
        return {**labels, "risk_flag": found}, phrase
    return labels, ""


def _level(hits: int) -> int:
    return 0 if hits == 0 else 1 if hits == 1 else 2 if hits <= 3 else 3


def heuristic_labels(text: str) -> dict:
    """Keyword-count baseline in the 4-label schema (deterministic, offline, NOT a real labeller)."""
    dep = _level(sum(w in text for w in DEPRESSION_WORDS))
    anx = _level(sum(w in text for w in ANXIETY_WORDS))
    risk, _ = detect_risk(text)
    distress = min(9, dep + anx + (3 if risk != "none" else 0) + (1 if dep or anx else 0))
    return {"depression_level": dep, "anxiety_level": anx, "risk_flag": risk, "student_distress_score": distress}
