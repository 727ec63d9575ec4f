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


# Student context: an item is kept when the client's words mention at least one of these (study, exams,
# school life and relationships at school). Emotions alone do not make a text student-related.
STUDENT_KEYWORDS = (
    "学生", "学习成绩", "学习压力", "学业", "考试", "高考", "中考", "考研", "考公", "成绩", "作业", "功课",
    "班主任", "辅导员", "导师", "同学", "室友", "舍友", "宿舍", "学校", "校园", "班级", "班上", "年级",
    "大学", "大一", "大二", "大三", "大四", "研究生", "读研", "读博", "博士", "高中", "高一", "高二", "高三",
    "初中", "初一", "初二", "初三", "小学", "上课", "课堂", "挂科", "补考", "复习", "论文", "毕业", "升学",
    "专业课", "留学", "排名", "期末", "期中", "逃课", "休学", "退学", "霸凌", "保研", "考上", "上学", "放学",
)
# Only the client's own words are searched: counselors say "学习" (learn) and clients call them "老师".

def is_student(text: str) -> bool:
    return any(k in text for k in STUDENT_KEYWORDS)
