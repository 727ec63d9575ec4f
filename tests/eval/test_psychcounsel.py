"""psychcounsel_bench: file validation, prompt formats, strict letter parsing, scoring, plugin run."""

from __future__ import annotations

import json

import pytest

from plugins import EvalContext, get_plugin
from plugins.base import mcnemar_exact, wilson_ci
from plugins.psychcounsel_bench import (
    BenchItem,
    Options,
    available_formats,
    load_bench,
    load_format,
    parse_letter,
    score,
)
from psyfactory.core.errors import EvalError

ITEMS = [
    {"id": 1, "question": "Which one?", "options": {"b": "second", "a": "first", "d": "fourth", "c": "third"},
     "answer": "c"},
    {"id": 2, "question": "", "options": {"a": "x", "b": "y", "c": "z", "d": "w", "e": "v"}, "answer": "E"},
    {"id": 3, "question": "Yes or no?", "options": {"a": "Yes.", "b": "No."}, "answer": "b"},
]


class ScriptedBackend:
    """Stands in for a model: fixed log-probabilities / replies, keyed by the item's first option."""

    name = "scripted"

    def __init__(self, logps: dict[str, list[float]], replies: dict[str, str]) -> None:
        self.logps, self.replies, self.calls = logps, replies, []

    def _key(self, conv):
        return next(k for k in self.logps if k in conv[-1]["content"])

    def option_logprobs(self, prompts, options):
        self.calls.append(("loglik", options))
        return [self.logps[self._key(p)] for p in prompts]

    def generate(self, conversations, *, max_new_tokens, json_schema=None):
        self.calls.append(("generate", max_new_tokens))
        return [self.replies[self._key(c)] for c in conversations]


@pytest.fixture
def bench_file(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(ITEMS), encoding="utf-8")
    return path


def test_load_bench_sorts_keys_and_keeps_empty_and_two_option_items(bench_file) -> None:
    items = load_bench(bench_file)
    assert [it.keys for it in items] == [["a", "b", "c", "d"], ["a", "b", "c", "d", "e"], ["a", "b"]]
    assert items[0].options[0] == ("a", "first")
    assert items[1].question == "" and items[1].answer == "e"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": 9, "question": "q", "options": {"a": "x", "b": "y"}, "answer": "c"}, "field 'answer' 'c'"),
        ({"id": 9, "question": "q", "options": {"a": "x"}, "answer": "a"}, "field 'options' needs >= 2"),
        ({"id": 9, "question": None, "options": {"a": "x", "b": "y"}, "answer": "a"}, "field 'question'"),
    ],
)
def test_load_bench_errors_name_file_item_and_field(tmp_path, record, message) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([ITEMS[0], record]), encoding="utf-8")
    with pytest.raises(EvalError, match=rf"bad.json: item #1 \(id=9\): {message}"):
        load_bench(path)


def test_load_bench_reports_json_line(tmp_path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[\n{"id": 1,\n}', encoding="utf-8")
    with pytest.raises(EvalError, match="broken.json: line 3: invalid JSON"):
        load_bench(path)


def test_builtin_prompt_formats_render(bench_file) -> None:
    assert set(available_formats()) >= {"professional", "bare", "chat"}
    item = load_bench(bench_file)[2]
    prof, bare, chat = (load_format(n) for n in ("professional", "bare", "chat"))
    assert [m["role"] for m in prof.conversation(item)] == ["user"]
    assert bare.conversation(item) == [{"role": "user", "content": "Yes or no?\nA. Yes.\nB. No."}]
    conv = chat.conversation(item)
    assert [m["role"] for m in conv] == ["system", "user"] and "A. Yes.\nB. No." in conv[1]["content"]
    assert "counselor" in prof.conversation(item)[0]["content"]


def test_user_prompt_format_file_and_errors(tmp_path, bench_file) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("user: 'Q: {question} {options}'\noption_line: '({letter}) {text}'\nletter_case: lower\n")
    fmt = load_format(str(mine))
    assert fmt.name == "mine"
    assert fmt.conversation(load_bench(bench_file)[2])[0]["content"] == "Q: Yes or no? (a) Yes.\n(b) No."
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: '{question}'\n")
    with pytest.raises(EvalError, match="bad.yaml: field 'user' must .* {options}"):
        load_format(str(bad))
    bad.write_text("user: '{options}'\ntemperature: 0\n")
    with pytest.raises(EvalError, match=r"bad.yaml: unknown fields \['temperature'\]"):
        load_format(str(bad))
    with pytest.raises(EvalError, match="unknown prompt format 'nope'"):
        load_format("nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C", "c"), (" c.", "c"), ("(B) second", "b"), ("**D**", "d"), ("Answer: A", "a"),
        ("The answer is B.", "b"), ("答案：C", "c"), ("A\n\nBecause ...", "a"), ("B - second", "b"),
        ("E", None),  # not an option of a 4-option item
        ("", None), ("A patient should be referred", None), ("I think it is C", None), ("Cognitive", None),
        ("Option C is correct", None),
    ],
)
def test_parse_letter_strict(text, expected) -> None:
    assert parse_letter(text, ["a", "b", "c", "d"]) == expected


def test_score_counts_unparsed_as_wrong(bench_file) -> None:
    items = load_bench(bench_file)
    m = score(items, ["c", None, "a"])
    assert m["n"] == 3 and m["correct"] == 1 and m["unparsed"] == 1
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["by_n_options"] == {"2": {"n": 1, "correct": 0, "accuracy": 0.0},
                                 "4": {"n": 1, "correct": 1, "accuracy": 1.0},
                                 "5": {"n": 1, "correct": 0, "accuracy": 0.0}}
    lo, hi = m["ci95"]
    assert lo < 1 / 3 < hi


def test_wilson_and_mcnemar_known_values() -> None:
    assert wilson_ci(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_ci(0, 0) == (0.0, 0.0)
    r = mcnemar_exact([False] * 6 + [True] * 4, [True] * 10)
    assert (r["only_a"], r["only_b"], r["diff"]) == (0, 6, pytest.approx(0.6))
    assert r["p_value"] == pytest.approx(2 * 0.5**6)  # exact two-sided binomial
    assert mcnemar_exact([True, False], [False, True])["p_value"] == 1.0
    assert mcnemar_exact([True], [True])["p_value"] == 1.0  # no discordant pair


def test_plugin_loglik_and_generate(tmp_path, bench_file) -> None:
    backend = ScriptedBackend(
        logps={"first": [-3, -2, -0.1, -5], "x": [-1, -1, -1, -1, -0.5], "Yes.": [-0.2, -0.9]},
        replies={"first": "C", "x": "<think>\nhmm\n</think>\n\nThe answer is F", "Yes.": "b."},
    )
    opts = Options(bench_file=str(bench_file), formats=["chat", "bare"])
    res = get_plugin("psychcounsel_bench").run(EvalContext("psychcounsel", tmp_path, backend=backend, options=opts))
    chat = res.metrics["formats"]["chat"]
    assert (chat["correct"], chat["unparsed"], chat["n"]) == (2, 0, 3)  # loglik picks c, e, a
    assert res.metrics["primary"]["format"] == "chat" and res.metrics["scoring"] == "loglik"
    assert backend.calls[0] == ("loglik", [["A", "B", "C", "D"], ["A", "B", "C", "D", "E"], ["A", "B"]])
    assert [r["chosen"] for r in res.items if r["format"] == "bare"] == ["c", "e", "a"]
    assert (tmp_path / "psychcounsel_accuracy.png").is_file()
    assert "| chat | 3 | 0.6667 |" in res.report

    res = get_plugin("psychcounsel_bench").run(EvalContext(
        "psychcounsel", tmp_path, backend=backend, options=Options(bench_file=str(bench_file), scoring="generate",
                                                                   formats=["bare"])))
    bare = res.metrics["formats"]["bare"]
    # "F" is not an option -> unparsed and wrong; "b." is the 2-option item's right answer
    assert (bare["correct"], bare["unparsed"], bare["think_blocks"]) == (2, 1, 1)
    assert backend.calls[-1] == ("generate", 50)
    assert [r["output"] for r in res.items] == ["C", "The answer is F", "b."]
    assert get_plugin("psychcounsel_bench").paired(res.items) == {"bare": {"1": True, "2": False, "3": True}}


def test_a_prompt_format_given_by_path_can_come_first(tmp_path, bench_file) -> None:
    mine = tmp_path / "my-format.yaml"
    mine.write_text("name: terse\nuser: '{question} {options}'\n")
    backend = ScriptedBackend(logps={"first": [-3, -2, -0.1, -5], "x": [-1, -1, -1, -1, -0.5],
                                     "Yes.": [-0.2, -0.9]}, replies={})
    res = get_plugin("psychcounsel_bench").run(EvalContext(
        "psychcounsel", tmp_path, backend=backend, options=Options(bench_file=str(bench_file),
                                                                   formats=[str(mine), "bare"])))
    assert res.metrics["primary"]["format"] == "terse" and set(res.metrics["formats"]) == {"terse", "bare"}


def test_options_are_typed() -> None:
    from plugins.psychcounsel_bench import PsychCounselBenchPlugin

    with pytest.raises(EvalError, match=r"psy.eval_options.psychcounsel_bench.scoring: Input should be 'loglik' or "):
        PsychCounselBenchPlugin.parse_options({"scoring": "logprob"})
    with pytest.raises(EvalError, match=r"unknown key 'psy.eval_options.psychcounsel_bench.formt' \(did you mean"):
        PsychCounselBenchPlugin.parse_options({"formt": ["bare"]})
    plugin = PsychCounselBenchPlugin()
    assert plugin.needs_backend and not plugin.needs_predictions
    assert plugin.needs_loglik(Options()) and not plugin.needs_loglik(Options(scoring="generate"))


def test_plugin_needs_bench_file(tmp_path) -> None:
    with pytest.raises(EvalError, match="PsychCounsel-Bench file not found"):
        get_plugin("psychcounsel_bench").run(EvalContext(
            "psychcounsel", tmp_path, backend=ScriptedBackend({}, {}), options=Options(bench_file=str(tmp_path / "x"))))


def test_bench_item_keys() -> None:
    assert BenchItem("1", "", (("a", "x"), ("b", "y")), "a").keys == ["a", "b"]
