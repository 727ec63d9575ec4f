"""Student set on the real samples: kept items are whole alternating dialogues, the keep count of each
filter step adds up, the teacher's relevance is recorded but never learned, the split is stratified
on risk_flag (every class in eval, reruns byte-identical) and the risk classes can be oversampled."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from dp_helpers import SAMPLES, SHARED, acc, need_shared, quarantine, rows

from psyfactory.data_prep import format_steps, prepare
from psyfactory.data_prep.common import stratified_split
from psyfactory.data_prep.lexicon import heuristic_labels

RISKS = ("none", "suicidal", "self_harm", "violence")
TURN = re.compile(r"^(来访者|咨询师)：")


def turns_of(text: str) -> list[str]:
    """Speakers of a rendered item; a line without a prefix continues the turn before it."""
    return [m.group(1) for line in text.split("\n") if (m := TURN.match(line))]


class SpreadTeacher:
    """Deterministic stand-in: spreads the risk classes over the items (by a hash of the text) and says
    every fifth text is not about a student, so that stratification and relevance can be checked."""

    cache_id = "spread-v1"
    workers = 1

    def label(self, text: str) -> dict:
        h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        labels = {**heuristic_labels(text), "risk_flag": RISKS[h % 7] if h % 7 < 4 else "none"}
        return {**labels, "student_related": h % 5 != 0}


@pytest.fixture(scope="module")
def spread_prep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    need_shared()
    out = tmp_path_factory.mktemp("spread")
    return out, prepare(["student"], SHARED, out, teacher=SpreadTeacher(), quiet=True)


def test_kept_items_are_whole_alternating_dialogues(shared_prep):
    out, _ = shared_prep
    recs = rows(out, "student", "train") + rows(out, "student", "eval")
    dialogues = [r for r in recs if r["id"].startswith("cpsycound-")]
    assert dialogues
    for r in dialogues:
        speakers = turns_of(r["input"])
        assert r["input"].startswith("来访者：") and speakers[0] == "来访者", r["id"]
        assert all(a != b for a, b in zip(speakers, speakers[1:], strict=False)), r["id"]  # alternates
        assert "咨询师" in speakers, r["id"]  # never a client monologue
        replies = [len(t) for t in re.findall(r"(?:^|\n)咨询师：(.*?)(?=\n来访者：|\n咨询师：|$)", r["input"], re.S)]
        assert sum(replies) / len(replies) >= 80, r["id"]  # the item-level reply rule (mean, the default)
    for r in recs:
        if r["id"].startswith("psyqa-"):
            assert turns_of(r["input"]) == ["来访者"]  # a help-seeker's post: one client turn


def test_keep_counts_per_step_add_up(shared_prep, capsys):
    out, result = shared_prep
    d, q = acc(result, "student", "CPsyCounD"), acc(result, "student", "PsyQA")
    for a in (d, q):
        kept = list(a.steps.values())
        assert kept == sorted(kept, reverse=True) and kept[0] == a.read and kept[-1] == a.written
        assert a.steps["parsed"] - a.steps["student keyword"] == sum(
            a.quarantined[r] for r in ("short_counselor_replies", "off_topic", "no_client_text"))
        assert a.steps["teacher valid"] - a.written == a.quarantined["teacher_not_student"]
    assert d.read == 1950 and d.steps["parsed"] == 1940  # 10 dialogues with an unknown speaker
    assert d.steps["reply rule (mean >= 80)"] == d.steps["parsed"] - d.quarantined["short_counselor_replies"]
    assert "reply rule (mean >= 80)" not in q.steps
    saved = json.loads((out / "data" / "student" / "accounting.json").read_text(encoding="utf-8"))
    assert saved[0]["steps"] == d.steps and saved[0]["options"]["reply_rule"] == "mean"
    printed = format_steps(result)
    assert f"student/CPsyCounD kept per step: read 1950 -> parsed 1940 -> reply rule (mean >= 80) " \
           f"{d.steps['reply rule (mean >= 80)']}" in printed
    assert "student eval classes: none=" in printed


def test_reply_rule_switch_changes_the_keep_count(tmp_path):
    res = {rule: prepare(["student"], SAMPLES, tmp_path / rule, teacher="lexicon", quiet=True, reply_rule=rule)
           for rule in ("any", "all")}
    any_, all_ = acc(res["any"], "student", "CPsyCounD"), acc(res["all"], "student", "CPsyCounD")
    assert (any_.steps["reply rule (any >= 80)"], all_.steps["reply rule (all >= 80)"]) == (4, 2)  # mean: 3
    assert any_.options["reply_rule"] == "any"


def test_teacher_relevance_is_recorded_not_learned(spread_prep):
    out, result = spread_prep
    recs = rows(out, "student", "train") + rows(out, "student", "eval")
    for r in recs:
        assert list(json.loads(r["output"])) == ["depression_level", "anxiety_level", "risk_flag",
                                                 "student_distress_score"]  # exactly the 4 labels
        assert r["student_related"] is True
    dropped = [x for x in quarantine(out, "student") if x["reason"] == "teacher_not_student"]
    assert dropped and len(dropped) == sum(a.quarantined["teacher_not_student"] for a in result["student"])
    assert "not about a student" in dropped[0]["detail"]
    cached = [json.loads(x)["labels"] for x in (out / "data" / "student" / "labels_cache.jsonl").read_text(
        encoding="utf-8").splitlines()]
    assert {c["student_related"] for c in cached} == {True, False}  # the teacher's answer is stored


def test_split_is_stratified_on_risk_flag(spread_prep, tmp_path):
    out, result = spread_prep
    train, ev = rows(out, "student", "train"), rows(out, "student", "eval")
    cls = {"train": [json.loads(r["output"])["risk_flag"] for r in train],
           "eval": [json.loads(r["output"])["risk_flag"] for r in ev]}
    present = set(cls["train"]) | set(cls["eval"])
    assert present == set(RISKS) and set(cls["eval"]) == present  # every class present is measurable
    for c in RISKS:
        n = cls["train"].count(c) + cls["eval"].count(c)
        assert abs(cls["eval"].count(c) - 0.1 * n) <= 1, (c, n)  # about 10% of each class
    totals = {split: {c: sum(a.classes[split][c] for a in result["student"]) for c in RISKS} for split in cls}
    assert totals == {split: {c: cls[split].count(c) for c in RISKS} for split in cls}  # accounting = files
    before = {p.name: p.read_bytes() for p in (out / "data" / "student").glob("*.jsonl")}
    prepare(["student"], SHARED, out, teacher=SpreadTeacher(), quiet=True)  # rerun: cache hits, same bytes
    assert {p.name: p.read_bytes() for p in (out / "data" / "student").glob("*.jsonl")} == before


def test_stratified_split_rules():
    classes = {f"k{i}": c for i, c in enumerate(["none"] * 50 + ["suicidal"] * 2 + ["violence"])}
    split = stratified_split(classes, 7, 0.1)
    by = lambda c, s: sum(classes[k] == c and split[k] == s for k in classes)  # noqa: E731
    assert (by("none", "eval"), by("suicidal", "eval"), by("suicidal", "train"), by("violence", "eval")) == (5, 1, 1, 1)
    assert stratified_split(dict(reversed(classes.items())), 7, 0.1) == split  # order-independent
    assert stratified_split(classes, 8, 0.1) != split  # the seed moves it


def test_oversampling_the_risk_classes(spread_prep, tmp_path):
    out, _ = spread_prep
    res = prepare(["student"], SHARED, tmp_path, teacher=SpreadTeacher(), quiet=True, oversample_risk=3)
    base_train, base_eval = rows(out, "student", "train"), rows(out, "student", "eval")
    train = rows(tmp_path, "student", "train")
    assert rows(tmp_path, "student", "eval") == base_eval  # eval is never oversampled
    risky = [r for r in base_train if json.loads(r["output"])["risk_flag"] != "none"]
    assert len(train) == len(base_train) + 2 * len(risky)
    copies = [r for r in train if "#copy" in r["id"]]
    assert {r["id"].split("#")[0] for r in copies} == {r["id"] for r in risky}
    assert all(json.loads(r["output"])["risk_flag"] != "none" for r in copies)
    assert all(a.options["oversample_risk"] == 3 for a in res["student"])
    assert sum(a.classes["train"]["none"] for a in res["student"]) == sum(
        json.loads(r["output"])["risk_flag"] == "none" for r in base_train)
