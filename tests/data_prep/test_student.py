"""Student task: whole-dialogue windows, the item-level reply rule, topic filter, teacher relevance,
teacher validation/quarantine, cache, crisis lexicon, stratified split and oversampling."""

from __future__ import annotations

import json

import pytest
from dp_helpers import SAMPLES, acc, quarantine, rows

from psyfactory.data_prep import DataError, prepare
from psyfactory.data_prep.lexicon import detect_risk, heuristic_labels
from psyfactory.data_prep.student import MAX_CHARS, MAX_TURNS, is_student, render, reply_rule_ok, window


class RecordingTeacher:
    """Delegates to the heuristic and records calls; optionally fails or changes answers."""

    def __init__(self, cache_id: str = "recording-v1", crash_after: int | None = None, answer=None) -> None:
        self.cache_id, self.crash_after, self.answer, self.calls = cache_id, crash_after, answer, []
        self.workers = 1

    def label(self, text: str):
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise KeyboardInterrupt  # simulated crash mid-run
        self.calls.append(text)
        reply = self.answer(text) if self.answer else heuristic_labels(text)
        return {"student_related": True, **reply}


def _alternates(turns) -> bool:
    roles = [r for r, _ in turns]
    return bool(roles) and roles[0] == "user" and all(a != b for a, b in zip(roles, roles[1:], strict=False))


def test_topic_filter_and_whole_turn_windows():
    assert is_student("我是高二学生，月考没考好") and not is_student("我和丈夫总是吵架")
    # a long dialogue with short counselor replies: the window keeps whole, alternating turns (the old
    # filter cut the short replies out and merged the client turns into a monologue)
    turns = [("user", "考试压力大" * 30), ("assistant", "嗯。")] * 20
    win, clipped = window(turns)
    assert not clipped and _alternates(win) and ("assistant", "嗯。") in win
    assert len(render(win)) <= MAX_CHARS and all(t in turns for t in win)
    assert win == turns[-len(win):] or win == turns[-len(win) + 1:]  # the most recent turns, none cut out
    assert reply_rule_ok(win, "mean") == (False, "mean counselor reply 2 characters < 80 (--reply-rule mean)")
    turns = [t for i in range(10) for t in (("user", f"第{i}次：我很焦虑。"), ("assistant", "我理解你的感受，" * 12))]
    win, _ = window(turns)
    assert len(win) == MAX_TURNS and win == turns[-MAX_TURNS:] and render(win).endswith("我理解你的感受，" * 12)
    assert reply_rule_ok(win, "mean")[0] and reply_rule_ok(win, "all")[0]
    # a dialogue that starts with the counselor and ends on the client: starts with the client, keeps the end
    turns = [("assistant", "你好。"), ("user", "我高三了。"), ("assistant", "说说看" * 30), ("user", "我睡不着。")]
    win, _ = window(turns)
    assert win == turns[1:] and _alternates(win)
    # the last exchange alone is longer than MAX_CHARS: that exchange, both turns clipped, still a dialogue
    turns = [("user", "前面的话。"), ("assistant", "好的。"), ("user", "很长的倾诉" * 300), ("assistant", "回应" * 800)]
    win, clipped = window(turns)
    assert clipped and [r for r, _ in win] == ["user", "assistant"] and len(render(win)) <= MAX_CHARS
    assert win[0][1].endswith("很长的倾诉") and win[1][1].startswith("回应")


def test_reply_rule_is_applied_to_the_item():
    item = [("user", "a"), ("assistant", "x" * 120), ("user", "b"), ("assistant", "x" * 50)]
    assert reply_rule_ok(item, "mean") == (True, "")  # mean 85
    assert reply_rule_ok(item, "any") == (True, "")
    assert reply_rule_ok(item, "all") == (False, "shortest counselor reply 50 characters < 80 (--reply-rule all)")
    short = [("user", "a"), ("assistant", "x" * 100), ("user", "b"), ("assistant", "x" * 40)]
    assert not reply_rule_ok(short, "mean")[0] and reply_rule_ok(short, "any")[0]
    assert reply_rule_ok([("user", "a")], "any") == (False, "no counselor reply")


def test_crisis_lexicon():
    assert detect_risk("我有时候真的不想活了")[0] == "suicidal"
    assert detect_risk("我从来没有想过自杀")[0] == "none"
    assert detect_risk("我会用刀划手")[0] == "self_harm"
    assert detect_risk("我想和他同归于尽")[0] == "violence"
    assert detect_risk("我想自残，甚至想死")[0] == "suicidal"  # most severe wins


def test_lexicon_raises_never_lowers(tmp_path):
    none_teacher = RecordingTeacher("always-none", answer=lambda t: {"depression_level": 1, "anxiety_level": 1,
                                                                     "risk_flag": "none", "student_distress_score": 3})
    prepare(["student"], SAMPLES, tmp_path / "a", teacher=none_teacher, quiet=True)
    changes = rows(tmp_path / "a", "student", "lexicon_changes")
    case3 = next(c for c in changes if c["id"] == "cpsycound-case_3")  # "活着没有意义" in the sample
    assert (case3["teacher"], case3["final"], case3["field"]) == ("none", "suicidal", "risk_flag")
    out = {r["id"]: json.loads(r["output"]) for r in rows(tmp_path / "a", "student", "train") + rows(tmp_path / "a", "student", "eval")}
    assert out["cpsycound-case_3"]["risk_flag"] == "suicidal"
    assert sum(r["risk_flag"] != "none" for r in out.values()) == len(changes)
    violence = RecordingTeacher("always-violence", answer=lambda t: {"depression_level": 0, "anxiety_level": 0,
                                                                     "risk_flag": "violence", "student_distress_score": 0})
    prepare(["student"], SAMPLES, tmp_path / "b", teacher=violence, quiet=True)
    assert rows(tmp_path / "b", "student", "lexicon_changes") == []  # never changes a non-none teacher flag
    assert all(json.loads(r["output"])["risk_flag"] == "violence" for r in rows(tmp_path / "b", "student", "train"))


def test_invalid_answers_are_quarantined(tmp_path):
    bad = RecordingTeacher("bad", answer=lambda t: {"depression_level": 7, "anxiety_level": 0, "risk_flag": "none",
                                                    "student_distress_score": 0})
    with pytest.raises(DataError, match="answers invalid .* the previous student set is kept"):
        prepare(["student"], SAMPLES, tmp_path, teacher=bad, quiet=True)  # default: at most 20% invalid
    assert not (tmp_path / "data" / "student" / "train.jsonl").exists()
    bad.max_invalid, bad.calls = 1.0, []  # accept any share: every item quarantined with its reason
    res = prepare(["student"], SAMPLES, tmp_path, teacher=bad, quiet=True)
    q = [x for x in quarantine(tmp_path, "student") if x["reason"] == "teacher_invalid"]
    assert len(q) == len(bad.calls) > 0 and "depression_level" in q[0]["detail"]
    assert sum(a.written for a in res["student"]) == 0
    assert not (tmp_path / "data" / "student" / "labels_cache.jsonl").exists()  # failures are not cached


def test_cache_resumes_after_crash(tmp_path):
    crashing = RecordingTeacher("resume-v1", crash_after=3)
    with pytest.raises(KeyboardInterrupt):
        prepare(["student"], SAMPLES, tmp_path, teacher=crashing, quiet=True)
    cache = tmp_path / "data" / "student" / "labels_cache.jsonl"
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 3
    with cache.open("a", encoding="utf-8") as fh:
        fh.write('{"key": "torn')  # a crash in the middle of a write
    second = RecordingTeacher("resume-v1")
    res = prepare(["student"], SAMPLES, tmp_path, teacher=second, quiet=True)
    total = sum(a.written for a in res["student"])
    assert len(second.calls) == total - 3  # only what was not done
    third = RecordingTeacher("resume-v1")
    prepare(["student"], SAMPLES, tmp_path, teacher=third, quiet=True)
    assert third.calls == []  # a rerun never relabels
    other = RecordingTeacher("another-teacher")
    prepare(["student"], SAMPLES, tmp_path, teacher=other, quiet=True)
    assert len(other.calls) == total  # the cache key includes the teacher


def test_no_teacher_is_an_error_or_a_visible_skip(tmp_path, monkeypatch):
    monkeypatch.delenv("PSY_TEACHER_BASE_URL", raising=False)
    with pytest.raises(DataError, match="no teacher configured"):
        prepare(["student"], SAMPLES, tmp_path, quiet=True)
    res = prepare(None, SAMPLES, tmp_path, quiet=True)
    (a,) = res["student"]
    assert a.skipped.startswith("student: no teacher configured")
    assert not (tmp_path / "data" / "student").exists()
    info = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    assert "student_train" not in info and "psydt_train" in info


def test_sample_student_sources(sample_prep):
    out, result = sample_prep
    d = acc(result, "student", "CPsyCounD")
    # case_2 and case_4 (no school context) and case_5 have short counselor replies: the whole item goes
    assert d.quarantined == {"short_counselor_replies": 3}
    off = {x["where"]: x["detail"] for x in quarantine(out, "student") if x["reason"] == "short_counselor_replies"}
    assert set(off) == {"cpsycound-case_2", "cpsycound-case_4", "cpsycound-case_5"}
    assert off["cpsycound-case_5"] == "mean counselor reply 60 characters < 80 (--reply-rule mean)"
    q = acc(result, "student", "PsyQA")
    assert q.quarantined == {"off_topic": 2}
    assert list(d.steps) == ["read", "parsed", "reply rule (mean >= 80)", "student keyword", "teacher valid",
                             "teacher: student_related", "written"]
    assert list(d.steps.values()) == [6, 6, 3, 3, 3, 3, 3]
    assert list(q.steps.values()) == [6, 6, 4, 4, 4, 4]  # no counselor text in a PsyQA item: no reply rule


def test_seed002_recipe_prepares_its_own_95_5_unscrubbed_copy(tmp_path):
    """`make prep RECIPE=seed002-student`: the student parser with the recipe's options, into data/seed002-student/
    (registered seed002-student_train / _eval): 5 % held out (the seed's val_size share) instead of 10 %, and the
    texts as the sources have them; the task's own data are untouched."""
    from dp_helpers import SHARED, need_shared

    from psyfactory.prep import prepare_recipe

    need_shared()
    res = prepare_recipe("seed002-student", SHARED, tmp_path, teacher="lexicon", quiet=True)
    mine = {s: rows(tmp_path, "seed002-student", s) for s in ("train", "eval")}
    n = len(mine["train"]) + len(mine["eval"])
    assert n > 50 and 0.03 <= len(mine["eval"]) / n <= 0.08  # stratified on risk_flag: ~5 % (10 % by default)
    assert all(a.pii_scrub is False and a.options["eval_fraction"] == 0.05 for a in res["seed002-student"])
    info = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["seed002-student_train"]["file_name"] == "data/seed002-student/train.jsonl"
    assert not (tmp_path / "data" / "student").exists()
