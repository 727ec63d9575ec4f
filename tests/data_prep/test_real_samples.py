"""Parsers on the real samples in ../shared/datasets (read-only, never copied into the repo)."""

from __future__ import annotations

import json
import re

from dp_helpers import SHARED, acc, quarantine, rows


def test_accounting_identity_every_source(shared_prep):
    out, result = shared_prep
    saved = json.loads((out / "data" / "prep_accounting.json").read_text(encoding="utf-8"))
    assert set(saved) == {"psydt", "cpsycoun", "psyqa", "es", "es_summary", "emotion", "sos1k", "student"}
    for task, accs in saved.items():
        for a in accs:
            assert a["read"] == a["written"] + sum(a["quarantined"].values()), (task, a)
            assert a["read"] > 0, (task, a["source"])
    # quarantine files hold exactly one line per quarantined unit
    for task, accs in saved.items():
        n = sum(sum(a["quarantined"].values()) for a in accs)
        assert len(rows(out, task, "quarantine")) == n, task


def test_emotion_counts_duplicates_and_conflicts(shared_prep):
    out, result = shared_prep
    train = acc(result, "emotion", "emotion/train.txt")
    assert train.read == 16000
    # README: 31 duplicated texts in train, 30 of them with conflicting labels (every copy quarantined)
    assert train.notes["conflicting_texts"] == 30
    assert train.quarantined == {"conflicting_label": 60, "duplicate": 1}
    assert train.samples["train"] == 16000 - 61
    test = acc(result, "emotion", "emotion/test.txt")
    assert test.read == 2000 and test.samples["eval"] + sum(test.quarantined.values()) == 2000
    first = rows(out, "emotion", "train")[0]
    assert (first["input"], first["output"]) == ("i didnt feel humiliated", "sadness")
    labels = {r["output"] for r in rows(out, "emotion", "eval")}
    assert labels == {"sadness", "joy", "love", "anger", "fear", "surprise"}
    # every raw test line is an eval row, in order, unless it was quarantined; each row gives back its
    # raw line exactly (text split on the LAST ';')
    raw = (SHARED / "emotion" / "test.txt").read_text(encoding="utf-8").splitlines()
    ev = rows(out, "emotion", "eval")
    dropped = {int(q["where"].split()[1]) for q in quarantine(out, "emotion") if q["file"] == "emotion/test.txt"}
    lines = [int(r["id"].rsplit("-", 1)[1]) for r in ev]
    assert lines == [n for n in range(1, len(raw) + 1) if n not in dropped]
    assert [f"{r['input']};{r['output']}" for r in ev] == [raw[n - 1] for n in lines]


def test_psyqa_split_by_question_and_contents(shared_prep):
    out, result = shared_prep
    a = acc(result, "psyqa", "PsyQA/")
    assert (a.read, a.written) == (100, 100)
    raw = json.loads((SHARED / "PsyQA" / "PsyQA_example.json").read_text(encoding="utf-8"))
    train, ev = rows(out, "psyqa", "train"), rows(out, "psyqa", "eval")
    qid = lambda r: int(r["id"].split("-")[1])  # noqa: E731
    train_q, eval_q = {qid(r) for r in train}, {qid(r) for r in ev}
    assert not train_q & eval_q and train_q | eval_q == {q["questionID"] for q in raw}
    assert len(ev) == len(eval_q) > 0  # one reference answer per eval question
    by_id = {q["questionID"]: q for q in raw}
    assert len(train) == sum(len({x["answer_text"] for x in by_id[q]["answers"]}) for q in train_q)
    for r in ev:  # the eval reference is the strategy-labelled answer
        q = by_id[qid(r)]
        assert r["output"] == next(x["answer_text"] for x in q["answers"] if x["has_label"]).strip()
        assert r["instruction"] == q["question"].strip()
    rec = next(r for r in train + ev if qid(r) == 4394)
    assert rec["instruction"] == "去爱一个事事让着你的人，是一种不可能的期待吗？"
    assert "\r" not in json.dumps(train + ev, ensure_ascii=False)


def test_cpsycoun_dialogues_are_clean_alternating_pairs(shared_prep):
    out, result = shared_prep
    d = acc(result, "cpsycoun", "CPsyCounD")
    assert d.read == len(list((SHARED / "CPsyCoun" / "CPsyCounD" / "Data").glob("case_*.txt"))) == 1950
    assert d.notes["crlf_normalised"] > 1000 and d.notes["same_speaker_merged"] > 0
    assert d.notes["stage_direction_dropped"] > 0 and d.notes["trailing_client_turn_dropped"] > 0
    train = rows(out, "cpsycoun", "train")
    assert len(train) == d.written
    for r in train:
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2), r["id"]
        for m in r["messages"]:
            assert not re.match(r"^(来访者|心理咨询师)[：:]", m["content"]), r["id"]
            assert "\r" not in m["content"]
            assert not any(re.fullmatch(r"[（(][^）)]*[）)]", line.strip()) for line in m["content"].split("\n"))
    case0 = next(r for r in train if r["id"] == "case_0")
    raw0 = (SHARED / "CPsyCoun" / "CPsyCounD" / "Data" / "case_0.txt").read_text(encoding="utf-8")
    assert raw0.startswith("来访者：" + case0["messages"][0]["content"].split("\n")[0])


def test_cpsycoune_every_counselor_turn_with_history(shared_prep):
    out, result = shared_prep
    e = acc(result, "cpsycoun", "CPsyCounE")
    assert (e.read, e.written) == (45, 45)
    expected = 0
    for f in (SHARED / "CPsyCoun" / "CPsyCounE").glob("*/*.json"):
        items = json.loads(f.read_text(encoding="utf-8"))
        prev = None
        for s in items:
            who = s.split("：", 1)[0]
            if who == "支持者" and prev == "求助者":
                expected += 1
            prev = who if who != prev else prev
    ev = rows(out, "cpsycoun", "eval")
    assert len(ev) == expected
    edu = [r for r in ev if r["id"].startswith("Education/1#")]
    raw = json.loads((SHARED / "CPsyCoun" / "CPsyCounE" / "Education" / "1.json").read_text(encoding="utf-8"))
    assert edu[0]["messages"][-1] == {"role": "assistant", "content": raw[1].split("：", 1)[1].strip()}
    assert [len(r["messages"]) for r in edu] == list(range(2, 2 * len(edu) + 1, 2))


def test_psydt_readme_example(shared_prep):
    out, result = shared_prep
    (a,) = result["psydt"]
    assert (a.read, a.written) == (1, 1) and a.notes["eval_overlaps_train"] == 1
    raw = json.loads((SHARED / "PsyDTCorpus" / "PsyDTCorpus_README_example.json").read_text(encoding="utf-8"))[0]
    (train,) = rows(out, "psydt", "train")
    assert train["messages"][0]["role"] == "system" and train["messages"][0]["content"] == raw["messages"][0]["content"].strip()
    n_assist = sum(m["role"] == "assistant" for m in raw["messages"])
    ev = rows(out, "psydt", "eval")
    assert len(ev) == n_assist
    assert ev[-1]["messages"][-1]["content"] == raw["messages"][-1]["content"].strip()


def test_es_longemotion_predict_set(shared_prep):
    out, result = shared_prep
    le = acc(result, "es", "LongEmotion")
    assert (le.read, le.written) == (100, 100)
    raw = [json.loads(x) for x in (SHARED / "LongEmotion" / "Emotion_Summary_origin.jsonl").read_text(encoding="utf-8").splitlines()]
    ev = rows(out, "es", "eval")
    assert ev[0]["output"] == raw[0]["experience_and_reflection"].strip()
    for part in raw[0]["case_description"] + raw[0]["consultation_process"]:
        assert part.strip() in ev[0]["input"]
    train, val = rows(out, "es", "train"), rows(out, "es", "val")
    assert (len(train), len(val)) == (85, 15)  # every PsyQA question, 85/15 by count as seed 000's table
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    # the ES-shaped records themselves, as seed 000 wrote them
    shaped = rows(out, "es", "psyqa_es_train") + rows(out, "es", "psyqa_es_val")
    assert [r["id"] for r in shaped] == [r["id"] for r in train + val]
    assert set(shaped[0]) == {"id", "case_description", "consultation_process", "experience_and_reflection"}
    by_id = {r["id"]: r for r in train + val}
    assert all(by_id[r["id"]]["output"] == r["experience_and_reflection"] for r in shaped)
    assert all(isinstance(r["case_description"], list) and isinstance(r["consultation_process"], list) for r in shaped)


def test_es_summary_targets_are_longemotion_five_fields(shared_prep):
    out, result = shared_prep
    (a,) = result["es_summary"]
    assert (a.read, a.written) == (100, 100)
    raw = [json.loads(x) for x in (SHARED / "LongEmotion" / "Emotion_Summary_origin.jsonl").read_text(encoding="utf-8").splitlines()]
    ev = rows(out, "es_summary", "eval")
    first = json.loads(ev[0]["output"])
    assert list(first) == ["causes", "symptoms", "treatment_process", "characteristics_of_illness", "treatment_effect"]
    assert first["symptoms"] == " ".join(raw[0]["symptoms"].split())
    assert raw[0]["experience_and_reflection"].strip() in ev[0]["input"]


def test_student_labels_are_valid_json_strings(shared_prep):
    out, result = shared_prep
    recs = rows(out, "student", "train") + rows(out, "student", "eval")
    assert len(recs) == sum(a.written for a in result["student"]) > 100
    for r in recs:
        lab = json.loads(r["output"])
        assert list(lab) == ["depression_level", "anxiety_level", "risk_flag", "student_distress_score"]
        assert 0 <= lab["depression_level"] <= 3 and 0 <= lab["anxiety_level"] <= 3
        assert lab["risk_flag"] in {"none", "suicidal", "self_harm", "violence"}
        assert 0 <= lab["student_distress_score"] <= 9
        assert len(r["input"]) <= 2000 and r["input"].count("\n来访者：") + r["input"].count("\n咨询师：") < 12
        assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", r["input"])
