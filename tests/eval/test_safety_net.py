"""The crisis safety net (psyfactory.core.safety + evaluation/safety/crisis_lexicon.yaml) on the
hand-written sentences of evaluation/safety/crisis_sentences.yaml, its never-lower rule, its errors,
and the json_labels plugin reporting model alone vs model + net."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from psyfactory.core.errors import ConfigError, EvalError
from psyfactory.core.paths import EVALUATION_DIR
from psyfactory.core.safety import SafetyNet, load_lexicon
from psyfactory.data_prep.teacher import student_schema
from psyfactory.plugins import EvalContext, Sample, TaskInfo, get_plugin
from psyfactory.plugins.json_labels import Options

CLASSES = ("suicidal", "self_harm", "violence")
SENTENCES = yaml.safe_load((EVALUATION_DIR / "safety" / "crisis_sentences.yaml").read_text(encoding="utf-8"))[
    "sentences"]
NOT_CRISIS = ("negation", "figurative", "accident", "benign", "third_person")


def lab(r: str) -> dict:
    return {"depression_level": 1, "anxiety_level": 1, "risk_flag": r, "student_distress_score": 3}


@pytest.fixture(scope="module")
def outcomes() -> list[tuple[dict, str, set[str]]]:
    """(sentence, class the net finds for the writer, classes it reports about someone else)."""
    lex = load_lexicon()
    return [(s, lex.detect(s["text"])[0], {h.cls for h in lex.scan(s["text"]) if h.status == "report"})
            for s in SENTENCES]


def test_the_sentence_set_covers_every_case() -> None:
    assert len(SENTENCES) >= 150 and len({s["text"] for s in SENTENCES}) == len(SENTENCES)
    lang = {s["text"]: "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in s["text"]) else "en" for s in SENTENCES}
    seen = Counter((lang[s["text"]], s["kind"], s["truth"]) for s in SENTENCES)
    for lg in ("zh", "en"):
        for c in CLASSES:
            assert seen[(lg, "crisis", c)] >= 8, (lg, c)
        for kind in ("negation", "figurative", "third_person", "benign"):
            assert seen[(lg, kind, "none")] >= 10, (lg, kind)
    assert all(s["truth"] in (*CLASSES, "none") and s.get("report", "none") in CLASSES + ("none",) for s in SENTENCES)


def test_curated_sentences_each_get_their_expected_outcome(outcomes) -> None:
    """Everything but the second held-out round (measured once, kept as measured: see the next test)."""
    wrong = []
    for s, found, reports in outcomes:
        if s.get("held_out") == 2 or s["kind"] == "implicit":
            continue
        if found != s["truth"] or (s.get("report") and s["report"] not in reports):
            wrong.append((s["text"], s["truth"], found, sorted(reports)))
    assert wrong == []


def test_recall_and_precision_on_all_sentences(outcomes) -> None:
    """Per class over every sentence (held-out rounds included): recall on explicit crisis language,
    recall on every positive (implicit ones too), precision; false raises per kind of non-crisis
    sentence. The thresholds sit just under the measured figures (docs/evaluation.md)."""
    table = {}
    for c in CLASSES:
        explicit = [f == c for s, f, _ in outcomes if s["truth"] == c and s["kind"] == "crisis"]
        every = [f == c for s, f, _ in outcomes if s["truth"] == c]
        raised = [s["truth"] == c for s, f, _ in outcomes if f == c]
        table[c] = (sum(explicit) / len(explicit), sum(every) / len(every), sum(raised) / len(raised))
    print("\nclass: recall explicit, recall all, precision", table)
    assert table["suicidal"][0] >= 0.85 and table["self_harm"][0] >= 0.9 and table["violence"][0] >= 0.9
    assert all(recall_all <= recall_explicit for recall_explicit, recall_all, _ in table.values())
    assert all(precision >= 0.95 for *_, precision in table.values())
    false_raises = Counter(s["kind"] for s, f, _ in outcomes if s["truth"] == "none" and f != "none")
    print("false raises per kind:", dict(false_raises), "of", Counter(s["kind"] for s in SENTENCES))
    assert false_raises["negation"] == 0 and false_raises["benign"] == 0 and false_raises["accident"] == 0
    assert false_raises["figurative"] <= 1 and false_raises["third_person"] <= 1  # both in held-out round 2
    reports = [s["report"] in r for s, _, r in outcomes if s.get("report")]
    assert sum(reports) >= len(reports) - 1


@pytest.mark.parametrize("model", ["none", "suicidal", "self_harm", "violence", None])
def test_the_net_raises_from_none_and_never_lowers(model: str | None) -> None:
    net = SafetyNet(load_lexicon(), "risk_flag")
    for s in SENTENCES:
        labels = lab(model) if model is not None else None
        found, _ = net.lexicon.detect(s["text"])
        out, d = net.apply(labels, s["text"])
        if model in (None, "none") and found != "none":
            assert d.raised and d.value == found and d.record()["class"] == found, s["text"]
        else:  # a class the model gave is never changed, and nothing is raised without crisis language
            assert not d.raised and d.value == model, s["text"]
        if labels is not None:
            assert {k: v for k, v in out.items() if k != "risk_flag"} == {k: v for k, v in labels.items()
                                                                          if k != "risk_flag"}
            assert out["risk_flag"] == d.value
        else:
            assert out is None


def test_counselor_lines_are_not_read_and_records_say_why() -> None:
    net = SafetyNet(load_lexicon(), "risk_flag")
    d = net.decide(lab("none"), "咨询师：你有没有想过自杀？\n来访者：没有，我只是压力大。")
    assert not d.raised and d.hits == []
    d = net.decide(lab("none"), "来访者：我室友说她想跳楼。我从没想过自杀，但笑死了，我自己也想死。")
    rec = d.record()
    assert (rec["raised"], rec["model"], rec["value"], rec["class"], rec["phrase"]) == (
        True, "none", "suicidal", "suicidal", "想死")
    assert rec["reports"] == [{"class": "suicidal", "phrase": "跳楼", "why": "她"}]
    assert rec["negated"] == [{"class": "suicidal", "phrase": "自杀", "why": "从没想过"}]
    assert "raised to 'suicidal'" in d.note() and "about someone else (not raised): '跳楼'" in d.note()
    d = net.decide(None, "I want to kill myself.")  # an invalid answer: the net's class stands in for it
    assert d.raised and d.model is None and "comes from the net alone" in d.note()
    assert net.decide(lab("violence"), "I want to kill myself.").note().endswith("the model's risk_flag 'violence' stands")


def test_hurting_someone_emotionally_is_not_violence() -> None:
    lex = load_lexicon()
    for text in ("我怕伤害她。", "分手的时候我伤害了他。", "I hurt her badly when we broke up.",
                 "I'm afraid I'll hurt her feelings."):
        assert lex.detect(text)[0] == "none", text
    for text in ("我想伤害他。", "I'm going to hurt him the way he hurt me."):
        assert lex.detect(text)[0] == "violence", text


def test_lexicon_errors_name_file_line_and_field(tmp_path) -> None:
    with pytest.raises(ConfigError, match="crisis lexicon not found"):
        load_lexicon(tmp_path / "missing.yaml")
    text = (EVALUATION_DIR / "safety" / "crisis_lexicon.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("      - 想去死\n", "      - 想去(死\n"), encoding="utf-8")
    line = text.split("      - 想去死\n")[0].count("\n") + 1
    with pytest.raises(ConfigError, match=rf"bad.yaml:{line}: classes.suicidal.zh.2: invalid regular expression"):
        load_lexicon(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text.replace("severity: [suicidal, self_harm, violence]", "severity: [suicidal, self_harm]"),
                     encoding="utf-8")
    with pytest.raises(ConfigError, match=r"wrong.yaml:\d+: severity \['suicidal', 'self_harm'\] must list each class"):
        load_lexicon(wrong)
    typo = tmp_path / "typo.yaml"
    typo.write_text(text.replace("skip_speakers:", "skip_speaker:"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"typo.yaml:\d+: unknown key 'skip_speaker' \(did you mean 'skip_speakers'"):
        load_lexicon(typo)
    net = SafetyNet(load_lexicon(), "crisis")
    with pytest.raises(ConfigError, match="raises crisis to 'none', 'suicidal', 'self_harm', 'violence'"):
        net.check(["no", "yes"], "crisis.json")


NET = Options(safety_field="risk_flag", safety_classes=list(CLASSES), min_support=2,
              safety_net="evaluation/safety/crisis_lexicon.yaml")
ITEMS = [  # (input, reference risk, model output)
    ("我不想活了。", "suicidal", json.dumps(lab("none"))),  # raised from none: right
    ("活着没意思，想死。", "suicidal", "not json"),  # raised from an invalid answer: right
    ("我想自杀。", "suicidal", json.dumps(lab("suicidal"))),  # the model found it
    ("我会用小刀划手臂。", "self_harm", json.dumps(lab("violence"))),  # the model's class stands
    ("我同学说他想自杀。", "none", json.dumps(lab("none"))),  # a report: not raised
    ("笑死了，累死了。", "none", json.dumps(lab("none"))),
    ("I want to kill myself, he said.", "none", json.dumps(lab("none"))),  # raised wrongly (quoted speech)
]


def test_json_labels_reports_model_alone_and_model_plus_net(tmp_path) -> None:
    samples = [Sample(str(i), [{"role": "user", "content": f"评估这名学生。\n{t}"}], json.dumps(lab(r)), text=t)
               for i, (t, r, _) in enumerate(ITEMS)]
    plugin = get_plugin("json_labels")
    res = plugin.run(EvalContext(TaskInfo("student", label_schema=student_schema()), tmp_path, samples,
                                 [o for *_, o in ITEMS], options=NET))
    m, sn = res.metrics, res.metrics["safety_net"]
    assert (sn["raised"], sn["raised_from_none"], sn["raised_from_invalid"], sn["raised_wrongly"]) == (3, 2, 1, 1)
    assert sn["raised_by_class"] == {"suicidal": 3} and sn["items_with_reports"] == 1
    assert (sn["model"]["suicidal"]["found"], sn["model_net"]["suicidal"]["found"]) == (1, 3)
    assert sn["recall"]["suicidal"] == 1.0 and m["safety_recall"]["suicidal"] == pytest.approx(1 / 3)
    assert sn["precision"]["suicidal"] == pytest.approx(3 / 4) and sn["model"]["suicidal"]["precision"] == 1.0
    assert sn["model_net"]["self_harm"] == sn["model"]["self_harm"]  # the model said violence: left alone
    assert sn["model_net"]["self_harm"]["recall"] is None and sn["model_net"]["self_harm"]["support"] == 1
    assert sn["lexicon_alone"]["self_harm"]["found"] == 1 and sn["lexicon_alone"]["suicidal"]["predicted"] == 4
    assert (sn["mcnemar"]["only_b"], sn["mcnemar"]["only_a"]) == (2, 1)
    items = res.items
    assert [it["net"]["raised"] for it in items] == [True, True, False, False, False, False, True]
    assert items[0]["parsed"]["risk_flag"] == "none" and items[0]["correct"]["risk_flag"] is False  # model alone
    assert items[0]["correct"]["risk_flag+net"] is True and items[3]["net"]["value"] == "violence"
    assert items[4]["net"]["reports"][0]["why"] == "他"
    assert plugin.paired(items)["risk_flag+net"]["1"] is True
    keys = plugin.headline_keys(m)
    assert {"safety_recall.violence", "safety_net.recall.suicidal", "safety_net.raised"} <= set(keys)
    report = res.report
    assert report.index("**Safety: risk_flag recall**") < report.index("### Crisis safety net")
    assert "| suicidal | 1/3 = 0.333 [0.061, 0.792] | 3/3 = 1.000 [0.439, 1.000] |" in report
    assert "| self_harm | 0/1, not measurable (< 2) |" in report
    assert "2 items only with the net right, 1 only without" in report
    assert plugin.files(NET)[0].name == "crisis_lexicon.yaml"


def test_json_labels_net_options_are_checked() -> None:
    plugin = get_plugin("json_labels")
    task = TaskInfo("student", label_schema=student_schema())
    with pytest.raises(EvalError, match="safety_net needs safety_field"):
        plugin.check(Options(safety_net="evaluation/safety/crisis_lexicon.yaml"), task)
    with pytest.raises(ConfigError, match="crisis lexicon not found"):
        plugin.check(Options(safety_field="risk_flag", safety_net="evaluation/safety/nope.yaml"), task)
    # the task is checked too, in preflight: a schema to score against, fields and classes it has
    with pytest.raises(EvalError, match="json_labels needs psy.label_schema"):
        plugin.check(Options(), TaskInfo("student"))
    with pytest.raises(EvalError, match="safety_field 'risk' is not an enum field"):
        plugin.check(Options(safety_field="risk"), task)
    with pytest.raises(EvalError, match="'suicide' not a value of risk_flag"):
        plugin.check(Options(safety_field="risk_flag", safety_classes=["suicide"]), task)
    with pytest.raises(EvalError, match="min_support"):
        plugin.parse_options({"min_support": 0})
    assert plugin.safety_net(Options()) is None
