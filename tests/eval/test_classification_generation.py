"""classification and generation plugins on hand-written predictions with known answers."""

from __future__ import annotations

import pytest

from psyfactory.core.errors import EvalError
from psyfactory.plugins import EvalContext, Sample, get_plugin
from psyfactory.plugins.classification import INVALID, normalize_label
from psyfactory.plugins.classification import Options as ClsOptions
from psyfactory.plugins.classification import score as cls_score
from psyfactory.plugins.generation import distinct_n, tokenize
from psyfactory.plugins.generation import score as gen_score

REFS = ["sadness", "joy", "joy", "anger", "fear", "surprise"]
PREDS = ["Sadness.", "joy", "I feel joy", "", "fear", "love"]


def test_normalize_label_is_strict_about_extra_words() -> None:
    labels = ["joy", "fear"]
    assert normalize_label("  'Joy'.\n", labels) == "joy"
    assert normalize_label("**fear**", labels) == "fear"
    assert normalize_label("I feel joy", labels) is None
    assert normalize_label("", labels) is None
    assert normalize_label("joyful", labels) is None


def test_classification_metrics_exact() -> None:
    m = cls_score(PREDS, REFS)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["invalid"] == 2 and m["invalid_rate"] == pytest.approx(1 / 3)
    # per-class F1: sadness 1, joy 2/3, love 0, anger 0, fear 1, surprise 0 -> macro over 6 labels
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 1) / 6)
    assert m["per_class"]["joy"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_class"]["love"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # rows = reference labels, last column = not a label
    assert m["confusion"][m["labels"].index("anger")] == [0, 0, 0, 0, 0, 0, 1]
    assert m["confusion"][m["labels"].index("joy")] == [0, 1, 0, 0, 0, 0, 1]
    assert m["confusion"][m["labels"].index("surprise")] == [0, 0, 1, 0, 0, 0, 0]


def test_classification_rejects_bad_reference_and_length_mismatch() -> None:
    with pytest.raises(EvalError, match="reference #1 'boredom'"):
        cls_score(["joy", "joy"], ["joy", "boredom"])
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        cls_score(["joy", "joy"], ["joy"])
    assert cls_score([], [])["n"] == 0


def test_classification_plugin_writes_png_and_report(tmp_path) -> None:
    samples = [Sample(str(i), [{"role": "user", "content": "x"}], r) for i, r in enumerate(REFS)]
    res = get_plugin("classification").run(EvalContext("emotion", tmp_path, samples, PREDS,
                                                       options=ClsOptions(scoring="generate")))
    png = tmp_path / "classification_confusion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy **0.5000**" in res.report and "2 (33.33%)" in res.report
    assert [it["label"] for it in res.items] == ["sadness", "joy", None, None, "fear", "love"]
    assert INVALID not in [it["label"] for it in res.items]
    paired = get_plugin("classification").paired(res.items)["label"]
    assert sum(paired.values()) == 3 and list(paired) == [str(i) for i in range(len(REFS))]  # 3 of 6 right


def test_tokenize_chinese_and_english() -> None:
    assert tokenize("我今天很难过，怎么办") == ["我", "今天", "很", "难过", "，", "怎么办"]
    assert tokenize("The Cat  sat") == ["the", "cat", "sat"]


def test_generation_metrics_exact() -> None:
    preds = ["the cat", "the cat sat on the mat", ""]
    refs = ["the cat sat", "the cat sat on the mat", "x y"]
    m = gen_score(preds, refs)
    # item 1: P=1, R=2/3 -> F1 0.8 (unigrams and LCS); bigrams P=1, R=1/2 -> 2/3; item 2 perfect; empty -> 0
    assert m["rouge-1"] == pytest.approx((0.8 + 1 + 0) / 3, abs=1e-6)
    assert m["rouge-2"] == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-6)
    assert m["rouge-l"] == pytest.approx((0.8 + 1 + 0) / 3, abs=1e-6)
    assert m["per_item"][1]["bleu-4"] == pytest.approx(1.0)
    assert m["per_item"][2] == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}
    assert m["distinct-1"] == pytest.approx(5 / 8)  # the, cat, sat, on, mat over 8 tokens
    assert m["distinct-2"] == pytest.approx(5 / 6)  # (the, cat) repeats
    assert m["empty"] == 1
    assert m["pred_chars"] == {"mean": pytest.approx(29 / 3), "median": 7.0, "min": 0, "max": 22}


def test_generation_chinese_identical_reply_scores_one() -> None:
    m = gen_score(["我今天很难过，怎么办"], ["我今天很难过，怎么办"])
    assert m["rouge-1"] == pytest.approx(1.0, abs=1e-6) and m["bleu-4"] == pytest.approx(1.0)
    assert distinct_n([["a", "a", "a"]], 2) == pytest.approx(1 / 2)
    assert distinct_n([[]], 1) == 0.0


def test_generation_plugin_report(tmp_path) -> None:
    samples = [Sample("0", [], "我很好"), Sample("1", [], "今天下雨")]
    res = get_plugin("generation").run(EvalContext("psyqa", tmp_path, samples, ["我很好", ""]))
    assert (tmp_path / "generation_lengths.png").is_file()
    assert res.metrics["empty"] == 1 and "per_item" not in res.metrics
    assert res.items[0]["rouge-1"] == pytest.approx(1.0, abs=1e-6)
    assert "## generation" in res.report


class LabelBackend:
    """Log-probabilities of each label from a table keyed by the sample text: a stand-in model."""

    name = "table"

    def __init__(self, table):
        self.table, self.calls = table, []

    def count_tokens(self, text):
        return {"sadness": 2}.get(text, 1)

    def option_logprobs(self, prompts, options, *, spec=None):
        self.calls.append(options[0])
        return [[self.table[p[-1]["content"]][lab] for lab in opts] for p, opts in zip(prompts, options, strict=True)]


def test_classification_by_label_loglik(tmp_path) -> None:
    """Every answer is a label (a chatty base model is still measured); length-normalised too."""
    labels = ["sadness", "joy", "fear"]
    samples = [Sample(str(i), [{"role": "user", "content": t}], r)
               for i, (t, r) in enumerate([("t0", "sadness"), ("t1", "joy"), ("t2", "fear")])]
    table = {"t0": {"sadness": -1.6, "joy": -1.0, "fear": -3.0},  # joy by total; sadness per token (-0.8)
             "t1": {"sadness": -4.0, "joy": -0.5, "fear": -2.0},
             "t2": {"sadness": -2.0, "joy": -2.5, "fear": -0.1}}
    be = LabelBackend(table)
    res = get_plugin("classification").run(EvalContext("emotion", tmp_path, samples, None, backend=be,
                                                       options=ClsOptions(labels=labels)))
    m = res.metrics
    assert be.calls == [labels] and m["scoring"] == "loglik" and m["invalid"] == 0
    assert m["accuracy"] == pytest.approx(2 / 3) and m["length_normalised"]["accuracy"] == 1.0
    assert [it["label"] for it in res.items] == ["joy", "joy", "fear"]
    assert res.items[0]["logprobs"] == {"sadness": -1.6, "joy": -1.0, "fear": -3.0}
    plugin = get_plugin("classification")
    assert plugin.needs_loglik(ClsOptions()) and not plugin.needs_generations(ClsOptions())
    assert plugin.needs_generations(ClsOptions(scoring="generate"))
