"""Chinese crisis-phrase lexicon and the offline heuristic labeller.

`detect_risk` finds suicide / self-harm / violence phrases (skipping simple negations such as
"没有想过自杀"). It is used to RAISE a teacher's `risk_flag` (never to lower it). The heuristic
labeller is a deterministic keyword baseline for offline demos and tests: it is NOT a real
labeller and must not be used to build training data for real models.
"""

from __future__ import annotations

import re

RISK_ORDER = ("none", "violence", "self_harm", "suicidal")  # ascending severity

CRISIS_PHRASES: dict[str, tuple[str, ...]] = {
    "suicidal": ("自杀", "想死", "不想活", "活不下去", "轻生", "结束生命", "结束自己的生命", "了结自己",
                 "跳楼", "跳河", "一了百了", "遗书", "去死", "活着没意思", "活着没有意义", "寻死", "割腕自杀"),
    "self_harm": ("自残", "自伤", "割腕", "划手", "割自己", "伤害自己", "打自己", "撞墙", "掐自己", "烫自己"),
    "violence": ("杀了他", "杀了她", "杀人", "弄死他", "弄死她", "打死他", "打死她", "同归于尽", "报复他",
                 "报复她", "伤害他人", "捅死"),
}
NEGATION = re.compile(r"(没有|没|不会|从未|从没|并没有|并不|不曾|不是)(想过|打算|想要|想)?$")

DEPRESSION_WORDS = ("抑郁", "难过", "绝望", "没有意义", "提不起兴趣", "失眠", "哭", "自责", "空虚", "低落",
                    "无助", "痛苦", "没意思", "伤心")
ANXIETY_WORDS = ("焦虑", "紧张", "担心", "害怕", "恐惧", "压力", "心慌", "不安", "慌", "睡不着", "崩溃")


_CATEGORY = {p: cat for cat, phrases in CRISIS_PHRASES.items() for p in phrases}
_CRISIS = re.compile("|".join(re.escape(p) for p in sorted(_CATEGORY, key=len, reverse=True)))


def detect_risk(text: str) -> tuple[str, str]:
    """(most severe risk category found, matched phrase) or ("none", "")."""
    best, phrase = "none", ""
    for m in _CRISIS.finditer(text):
        if NEGATION.search(text[max(0, m.start() - 6): m.start()]):
            continue
        cat = _CATEGORY[m.group(0)]
        if RISK_ORDER.index(cat) > RISK_ORDER.index(best):
            best, phrase = cat, m.group(0)
    return best, phrase


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
