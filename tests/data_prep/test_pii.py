"""PII scrubbing (data_prep.pii): recall and false positives on a synthetic set in real dialogue context
(tests/data_prep/pii_synth.py), the spellings people use, honorifics left alone, what it replaces in
the real raw samples, and every task scrubbing by default with a switch to turn it off."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from dp_helpers import SAMPLES, SHARED, need_shared
from pii_synth import measure
from psyutil import cli

from psyfactory.data_prep import prepare, tasks
from psyfactory.data_prep.pii import TITLES, Scrubber


def test_recall_and_false_positives_meet_the_targets():
    need_shared()
    found, touched = measure(600)
    removed, total = sum(v[0] for v in found.values()), sum(v[1] for v in found.values())
    assert total >= 300 and removed / total >= 0.99, found
    for kind in ("phone", "id_number", "email", "qq", "wechat", "class"):  # patterns: every one
        assert found[kind][0] == found[kind][1], (kind, found[kind])
    for kind in ("name", "school"):  # the tagger: nearly every one
        assert found[kind][0] / found[kind][1] >= 0.95, (kind, found[kind])
    changed, benign = sum(v[0] for v in touched.values()), sum(v[1] for v in touched.values())
    assert benign >= 300 and changed / benign <= 0.01, touched
    assert set(touched) >= {"age", "date", "score", "price", "honorific", "school_generic"}


@pytest.mark.parametrize(("text", "expected"), [
    ("我的手机是+86 138 1234 5678，", "我的手机是[PHONE]，"),
    ("电话138-1234-5678或010-62345678", "电话[PHONE]或[PHONE]"),
    ("身份证11010519900307123X。", "身份证[ID]。"),
    ("学号2021123456", "学号[ID]"),
    ("邮箱 xm.wang@pku.edu.cn", "邮箱 [EMAIL]"),
    ("加我扣扣12345678吧，Q号是87654321，QQ号：55555", "加我扣扣[QQ]吧，Q号是[QQ]，QQ号：[QQ]"),
    ("微信号是wx_abc123，V信 lily2020，vx：Happy_Day", "微信号是[WECHAT]，V信 [WECHAT]，vx：[WECHAT]"),
    ("我叫王小明，今年十六岁。", "我叫[NAME]，今年十六岁。"),
    ("我的名字叫林晓燕。", "我的名字叫[NAME]。"),
    ("大家好，我是张伟。", "大家好，我是[NAME]。"),
    ("班主任李老师说我不努力。", "班主任[NAME]老师说我不努力。"),
    ("张老师？", "[NAME]老师？"),
    ("王芳同学总是针对我。", "[NAME]同学总是针对我。"),
    ("我在北京市第一中学读高二（3）班。", "我在[SCHOOL]读高二[CLASS]。"),
    # honorifics and look-alikes stay
    ("谢谢老师，心理老师和班主任老师都很好。", None),
    ("我向老师请教，跟同学吵架了，各位老师好。", None),
    ("我是一名高中生，我是高二学生，我叫他别管我。", None),
    ("我今年16岁，2023年9月1日开学，考了580分，花了3999元。", None),
    ("我在一所普通大学，上的是重点高中，想考985大学。", None),
    ("在微信上聊了很久，他在QQ空间里说我。", None),
    ("WeChat Moments and QQ groups", None),
])
def test_spellings_and_honorifics(text: str, expected: str | None):
    assert Scrubber().scrub(text) == (text if expected is None else expected)


def test_switched_off_passes_text_through():
    s = Scrubber(enabled=False)
    assert s.scrub("我叫王小明，电话13812345678") == "我叫王小明，电话13812345678" and not s.counts


def test_replacements_in_the_real_raw_samples():
    """What the scrubber changes in the real CPsyCounD dialogues and PsyQA questions, inspected: names
    before titles (朱老师, 王女士...) and self-introductions; honorifics such as 谢谢老师 stay."""
    need_shared()
    s = Scrubber()
    raw = [p.read_text(encoding="utf-8") for p in sorted((SHARED / "CPsyCoun" / "CPsyCounD" / "Data").glob("*.txt"))]
    raw += [q["question"] + q["description"] for q in
            json.loads((SHARED / "PsyQA" / "PsyQA_example.json").read_text(encoding="utf-8"))]
    kinds: Counter = Counter()
    context: Counter = Counter()
    for text in raw:
        spans = s.find(text)
        kinds.update(k for _, _, k in spans)
        for b, e, k in spans:
            if k == "name":  # only in the two documented contexts
                context["title" if text[e:].startswith(TITLES) else "intro" if re.search(
                    r"(?:我是|我叫|名叫|叫我|我就是|名字[叫是：:])\s*$", text[max(0, b - 6):b]) else "other"] += 1
        out = s.scrub(text)
        for honorific in ("谢谢老师", "心理老师", "班主任老师", "心理咨询师"):
            assert out.count(honorific) == text.count(honorific), honorific
    assert 400 <= kinds["name"] <= 650 and context["other"] == 0 and context["intro"] >= 10, (kinds, context)
    assert set(kinds) <= {"name", "school", "phone", "qq", "wechat", "email"}, kinds


SECRETS = ("张伟", "13912345678", "lily_2020", "13612345678", "case7@example.com", "contact@example.org",
           "joy99@example.com", "林晓雨", "王老师", "138-1234-5678", "QQ：12345678")


def raw_with_pii(root: Path) -> Path:
    """The bundled samples with identifiers put into every source (the samples already hold some)."""
    shutil.copytree(SAMPLES, root)

    def edit(rel: str, old: str, new: str) -> None:
        p = root / rel
        text = p.read_text(encoding="utf-8")
        assert old in text, (rel, old)
        p.write_text(text.replace(old, new, 1), encoding="utf-8")

    for name in ("PsyDTCorpus_train_mulit_turn_packing.json", "PsyDTCorpus_test_single_turn_split.json"):
        data = json.loads((root / "PsyDTCorpus" / name).read_text(encoding="utf-8"))
        data[0]["messages"][1]["content"] = "我叫张伟，手机13912345678。" + data[0]["messages"][1]["content"]
        (root / "PsyDTCorpus" / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    edit("CPsyCoun/CPsyCounE/Education/1.json", "求助者：", "求助者：我的微信号是lily_2020。")
    lines = (root / "LongEmotion" / "Emotion_Summary_origin.jsonl").read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[0])
    rec["case_description"][0] += " Phone: 13612345678."
    rec["causes"] += " Reach the family at case7@example.com."
    rec["experience_and_reflection"] += " Supervisor: contact@example.org."
    lines[0] = json.dumps(rec, ensure_ascii=False)
    (root / "LongEmotion" / "Emotion_Summary_origin.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("fold4.tsv", "fold4_twoClass.tsv"):  # the two files of a fold hold the same comments
        edit(f"SOS-1K/{name}", "一个人在外地", "我叫林晓雨，手机13712345678，一个人在外地")
    with (root / "emotion" / "train.txt").open("a", encoding="utf-8") as fh:
        fh.write("i feel happy tell me at joy99@example.com;joy\n")
    return root


def outputs(ds: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ds / "data").rglob("*.jsonl")))


def test_every_task_scrubs_by_default_and_the_switch_keeps_pii(tmp_path):
    raw = raw_with_pii(tmp_path / "raw")
    res = prepare(None, raw, tmp_path / "on", teacher="lexicon", quiet=True)
    text = outputs(tmp_path / "on")
    assert not [s for s in SECRETS if s in text]
    assert "[NAME]" in text and "[PHONE]" in text and "[WECHAT]" in text and "[EMAIL]" in text
    saved = json.loads((tmp_path / "on" / "data" / "prep_accounting.json").read_text(encoding="utf-8"))
    assert set(saved) == set(tasks())
    for task, accs in saved.items():
        assert all(a["pii_scrub"] is True for a in accs), task
        assert sum(sum(a["pii"].values()) for a in accs) > 0, task  # every task found and replaced some
    student = Counter()
    for a in res["student"]:
        student.update(a.pii)
    assert {"name", "class", "qq", "phone"} <= set(student)

    res = prepare(None, raw, tmp_path / "off", teacher="lexicon", quiet=True, scrub=False)
    text = outputs(tmp_path / "off")
    assert all(s in text for s in SECRETS if s not in ("王老师",)) and "[NAME]" not in text
    assert all(not a.pii_scrub and not a.pii for accs in res.values() for a in accs)


def test_no_scrub_on_the_command_line(tmp_path):
    cli("prep", "--task", "psyqa", "--raw-dir", str(SAMPLES), "--dataset-dir", str(tmp_path), "--no-scrub")
    assert "QQ：12345678" in (tmp_path / "data" / "psyqa" / "train.jsonl").read_text(encoding="utf-8")
    (a,) = json.loads((tmp_path / "data" / "psyqa" / "accounting.json").read_text(encoding="utf-8"))
    assert a["pii_scrub"] is False and a["pii"] == {}
    res = cli("prep", "--task", "psyqa", "--raw-dir", str(SAMPLES), "--dataset-dir", str(tmp_path))
    assert "phone=1, qq=1" in res.stdout
    assert "QQ：[QQ]" in (tmp_path / "data" / "psyqa" / "train.jsonl").read_text(encoding="utf-8")


def test_an_id_shaped_string_after_the_word_is_scrubbed_whatever_its_date():
    """Structure-valid IDs were scrubbed, but one with an impossible birth date after 身份证号 was kept (issue 22)."""
    from psyfactory.data_prep.pii import Scrubber

    s = Scrubber()
    assert s.scrub("我的身份证号是110101199913451234，别告诉别人") == "我的身份证号是[ID]，别告诉别人"
    assert s.scrub("证件号码：11010119991345123X") == "证件号码：[ID]"
    assert s.scrub("身份证这件事我很担心") == "身份证这件事我很担心"  # the word alone is not PII
