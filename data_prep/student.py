"""Student mental-state assessment (4 labels) from CPsyCounD dialogues and PsyQA questions.

Pipeline per item: normalise (speaker prefixes stripped, same-speaker turns merged, stage
directions dropped: done by the CPsyCounD parser) -> drop counselor replies under 80 characters ->
trim to the most recent turns (<= 12 turns and <= 2000 characters) -> anonymise -> keep
student-related topics (`STUDENT_KEYWORDS`) -> label with the teacher (cached, validated, bounded
retries, invalid -> quarantine) -> the crisis lexicon may raise `risk_flag`, never lower it.
Output: alpaca with `output` = the labels as a JSON *string*.
"""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep import cpsycoun, lexicon, psyqa
from data_prep.common import DataError, Ledger, TaskOutput, split_of
from data_prep.psyqa import ensure_eval
from data_prep.teacher import LabelCache, TeacherError, ordered

NEEDS_TEACHER = True  # data_prep.prepare passes teacher= and dataset_dir= to build()
SOURCES = "CPsyCounD+PsyQA"
EVAL_FRACTION = 0.1
MIN_COUNSELOR_CHARS = 80
MAX_TURNS = 12
MAX_CHARS = 2000
SPEAKER = {"user": "来访者", "assistant": "咨询师"}

# Student context: an item is kept when it mentions at least one of these (study, exams, school
# life and relationships at school). Emotions alone do not make a text student-related.
STUDENT_KEYWORDS = (
    "学生", "学习成绩", "学习压力", "学业", "考试", "高考", "中考", "考研", "考公", "成绩", "作业", "功课",
    "班主任", "辅导员", "导师", "同学", "室友", "舍友", "宿舍", "学校", "校园", "班级", "班上", "年级",
    "大学", "大一", "大二", "大三", "大四", "研究生", "读研", "读博", "博士", "高中", "高一", "高二", "高三",
    "初中", "初一", "初二", "初三", "小学", "上课", "课堂", "挂科", "补考", "复习", "论文", "毕业", "升学",
    "专业课", "留学", "排名", "期末", "期中", "逃课", "休学", "退学", "霸凌", "保研", "考上", "上学", "放学",
)
# Only the client's own words are searched: counselors say "学习" (learn) and clients call them "老师".

STUDENT_INSTRUCTION = (
    "评估这名学生当前的心理状态。只输出一个 JSON 对象，键为 depression_level（0-3）、anxiety_level（0-3）、"
    "risk_flag（none/suicidal/self_harm/violence）、student_distress_score（0-9）。"
)

# ------------------------------------------------------------------------------------ anonymisation
_ANON: list[tuple[str, re.Pattern[str], str]] = [
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[EMAIL]"),
    ("url", re.compile(r"(?:https?://|www\.)[^\s，。！？、）)]+"), "[URL]"),
    ("id_card", re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"), "[ID]"),
    ("phone", re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)"), "[PHONE]"),
    ("phone", re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)"), "[PHONE]"),
    ("qq", re.compile(r"(?i)(QQ(?:号)?[：:\s]*)\d{5,11}"), r"\1[QQ]"),
    ("wechat", re.compile(r"((?:微信|vx|VX|wx|WX)(?:号)?[：:\s]*)[A-Za-z][-_A-Za-z0-9]{5,19}"), r"\1[WECHAT]"),
    ("name", re.compile(r"((?:我叫|我的名字是|我名叫|名叫|姓名[：:]\s*))[\u4e00-\u9fa5]{2,3}"), r"\1[NAME]"),
    ("name", re.compile(r"(?<![\u4e00-\u9fa5])[\u4e00-\u9fa5]{1,2}(?=(?:同学|老师|先生|女士)[，,。：:])"), "[NAME]"),
]


def anonymise(text: str, counts: dict[str, int] | None = None) -> str:
    for kind, pat, repl in _ANON:
        text, n = pat.subn(repl, text)
        if counts is not None and n:
            counts[kind] = counts.get(kind, 0) + n
    return text


def is_student(text: str) -> bool:
    return any(k in text for k in STUDENT_KEYWORDS)


def dialogue_text(turns: list[tuple[str, str]], ledger: Ledger | None = None) -> str:
    """Drop short counselor replies, re-merge, keep the most recent turns within the limits, render."""
    kept = [(r, t) for r, t in turns if r == "user" or len(t) >= MIN_COUNSELOR_CHARS]
    if ledger:
        ledger.note("short_counselor_replies_dropped", len(turns) - len(kept))
    kept = cpsycoun.merge_turns(kept)
    out: list[str] = []
    total = 0
    for role, text in reversed(kept):
        line = f"{SPEAKER[role]}：{text}"
        if out and (len(out) >= MAX_TURNS or total + len(line) + 1 > MAX_CHARS):
            if ledger:
                ledger.note("trimmed_to_recent_turns")
            break
        if not out and len(line) > MAX_CHARS:  # a single over-long last turn: keep its end
            line = f"{SPEAKER[role]}：…" + text[-(MAX_CHARS - 5):]
        out.append(line)
        total += len(line) + 1
    return "\n".join(reversed(out))


def validate(labels: Any) -> dict[str, Any]:
    """Schema check of one label object (psyfactory.core.labels); raises ValueError with reason codes."""
    from psyfactory.core.labels import validate_student_labels

    reasons = validate_student_labels(labels)
    if reasons:
        raise ValueError(f"{', '.join(reasons)}: {str(labels)[:120]}")
    return ordered(labels)


def build(raw_dir: Path, seed: int, *, teacher: Any, dataset_dir: Path,
          eval_fraction: float = EVAL_FRACTION) -> TaskOutput:
    task_dir = dataset_dir / "data" / "student"
    dl = Ledger("student", "CPsyCounD", raw_dir)
    ql = Ledger("student", "PsyQA", raw_dir)
    anon_counts: dict[str, int] = {}
    items: list[tuple[str, str, str, Ledger, str]] = []  # (id, text, client words, ledger, file)
    for d in cpsycoun.parse_d(raw_dir, dl):
        text = dialogue_text(d.turns, dl)
        client = "\n".join(t for r, t in d.turns if r == "user")
        items.append((f"cpsycound-{d.id}", text, client, dl, dl.rel(d.file)))
    qpath = dl.rel(psyqa.find_file(raw_dir))
    for q in psyqa.parse(raw_dir, ql):
        text = q.question + ("\n" + q.description if q.description else "")
        items.append((f"psyqa-{q.qid}", f"{SPEAKER['user']}：{text}", text, ql, qpath))

    todo: list[tuple[str, str, Ledger, str]] = []
    for sid, text, client, lg, file in items:
        text = anonymise(text, anon_counts)
        if not client.strip():
            lg.reject(file, sid, "no_client_text")
        elif not is_student(client):
            lg.reject(file, sid, "off_topic", "no student keyword (see STUDENT_KEYWORDS)")
        else:
            todo.append((sid, text, lg, file))
    for k, n in sorted(anon_counts.items()):
        dl.note(f"anonymised_{k}", n)  # counted over both sources

    cache = LabelCache(task_dir / "labels_cache.jsonl")
    keys = {sid: LabelCache.key(teacher, text) for sid, text, _, _ in todo}
    need = [(sid, text) for sid, text, _, _ in todo if cache.get(keys[sid]) is None]
    failures: dict[str, str] = {}

    def work(item: tuple[str, str]) -> tuple[str, dict[str, Any] | None, str]:
        sid, text = item
        try:
            return sid, validate(teacher.label(text)), ""
        except DataError:  # unreachable endpoint etc.: stop the run
            raise
        except (TeacherError, ValueError, TypeError, KeyError) as e:
            return sid, None, str(e)[:300]

    try:
        with ThreadPoolExecutor(max_workers=max(1, getattr(teacher, "workers", 1))) as pool:
            for sid, labels, err in tqdm(pool.map(work, need), total=len(need), desc="teacher labels",
                                         unit="item", disable=len(need) < 20):
                if labels is None:
                    failures[sid] = err
                else:
                    cache.put(keys[sid], labels)
    finally:
        cache.close()

    limit = float(getattr(teacher, "max_invalid", 0.2))
    if need and len(failures) / len(need) > limit:
        first = next(iter(failures.values()))
        raise DataError(f"teacher {teacher.cache_id}: {len(failures)} of {len(need)} answers invalid "
                        f"({len(failures) / len(need):.0%}, above the {limit:.0%} limit PSY_TEACHER_MAX_INVALID); "
                        f"nothing written, the previous student set is kept ({len(need) - len(failures)} valid "
                        f"labels cached). First: {first[:160]}")
    who = teacher.describe() if hasattr(teacher, "describe") else {"id": teacher.cache_id}
    dl.acc.labelled_by = ql.acc.labelled_by = who
    kept: list[tuple[str, str, dict[str, Any]]] = []
    changes: list[dict[str, Any]] = []
    for sid, text, lg, file in todo:
        if sid in failures:
            lg.reject(file, sid, "teacher_invalid", failures[sid])
            continue
        labels = cache.get(keys[sid])
        assert labels is not None
        raised, phrase = lexicon.raise_risk(labels, text)
        if phrase:
            changes.append({"id": sid, "field": "risk_flag", "teacher": labels["risk_flag"],
                            "final": raised["risk_flag"], "phrase": phrase})
            lg.note("lexicon_raised_risk_flag")
        kept.append((sid, text, raised))
    # run-specific, so printed rather than saved (saved accounting is identical on reruns)
    print(f"[student] teacher {teacher.cache_id}: {len(todo) - len(need)} labels from cache, {len(need)} requested, "
          f"{len(failures)} invalid -> quarantined", file=sys.stderr)

    splits = {sid: split_of(f"student:{sid}", seed, eval_fraction) for sid, _, _ in kept}
    ensure_eval(splits, dl)
    out: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    for sid, text, labels in kept:
        out[splits[sid]].append({"id": sid, "system": "", "instruction": STUDENT_INSTRUCTION, "input": text,
                                 "output": json.dumps(labels, ensure_ascii=False), "teacher": teacher.cache_id})
    for lg, prefix in ((dl, "cpsycound-"), (ql, "psyqa-")):
        for split, recs in out.items():
            lg.acc.samples[split] = sum(r["id"].startswith(prefix) for r in recs)
    return TaskOutput("student", "alpaca", out, [dl, ql], extra_files={"lexicon_changes.jsonl": changes})
