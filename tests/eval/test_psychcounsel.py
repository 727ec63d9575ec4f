"""psychcounsel_bench: file validation and exclusions, the seed's formats byte for byte, strict and
lenient letter extraction, scoring, bias diagnostics (letter distribution, constant-letter baselines,
permutation-debiased accuracy) on hand-written outputs, and a plugin run."""

from __future__ import annotations

import json
import re

import pytest

from psyfactory.core.backend import is_plain
from psyfactory.core.errors import EvalError
from psyfactory.core.generation import GenerationSpec
from psyfactory.core.paths import REPO_ROOT
from psyfactory.plugins import EvalContext, TaskInfo, get_plugin
from psyfactory.plugins.base import mcnemar_exact, wilson_ci
from psyfactory.plugins.psychcounsel_bench import (
    BenchItem,
    Options,
    available_formats,
    bias,
    debiased,
    load_bench,
    load_format,
    parse_letter,
    parse_letter_lenient,
    score,
)

ITEMS = [
    {"id": 1, "question": "Which one?", "options": {"b": "second", "a": "first", "d": "fourth", "c": "third"},
     "answer": "c"},
    {"id": 2, "question": "Pick the last.", "options": {"a": "x", "b": "y", "c": "z", "d": "w", "e": "v"}, "answer": "E"},
    {"id": 3, "question": "Yes or no?", "options": {"a": "Yes.", "b": "No."}, "answer": "b"},
    {"id": 4, "question": "  ", "options": {"a": "p", "b": "q"}, "answer": "a"},  # empty question: excluded
    {"id": 5, "question": "Only one?", "options": {"a": "p"}, "answer": "a"},  # one option: excluded
]
SEED = REPO_ROOT.parent / "shared" / "seeds" / "004-psydt-qwen3-4b-psychcounsel.md"


class ScriptedBackend:
    """Stands in for a model: log-probabilities or a reply chosen by a rule over the prompt's options."""

    name = "scripted"

    def __init__(self, logps=None, replies=None, pick=None) -> None:
        self.logps, self.replies, self.pick, self.calls = logps or {}, replies or {}, pick, []

    def _key(self, conv):
        return next(k for k in self.logps or self.replies if k in conv[-1]["content"])

    def option_logprobs(self, prompts, options, *, spec=None):
        self.calls.append(("loglik", options))
        if self.pick:  # a rule: log p = 0 for the picked letter, -5 for the others
            return [[0.0 if self.pick(p[-1]["content"], opts) == L else -5.0 for L in opts] for p, opts in
                    zip(prompts, options, strict=True)]
        return [self.logps[self._key(p)] for p in prompts]

    def generate(self, conversations, spec, *, json_schema=None):
        self.calls.append(("generate", spec))
        if self.pick:
            return [self.pick(c[-1]["content"], [m[0] for m in re.findall(r"^([A-E])\. ", c[-1]["content"], re.M)])
                    for c in conversations]
        return [self.replies[self._key(c)] for c in conversations]


@pytest.fixture
def bench_file(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(ITEMS), encoding="utf-8")
    return path


def test_load_bench_sorts_keys_and_excludes_malformed_items(bench_file) -> None:
    bench = load_bench(bench_file)
    assert [it.keys for it in bench.items] == [["a", "b", "c", "d"], ["a", "b", "c", "d", "e"], ["a", "b"]]
    assert bench.items[0].options[0] == ("a", "first") and bench.items[1].answer == "e"
    assert bench.excluded == [{"id": "4", "reason": "empty question"}, {"id": "5", "reason": "1 option(s)"}]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": 9, "question": "q", "options": {"a": "x", "b": "y"}, "answer": "c"}, "field 'answer' 'c'"),
        ({"id": 9, "question": "q", "options": {"aa": "x", "b": "y"}, "answer": "b"}, "field 'options' needs single"),
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


def _seed_example(heading: str) -> list[str]:
    """The fenced blocks of the seed's worked example under `heading` (the 示例 part)."""
    text = SEED.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    section = section[section.index("**示例**"):]
    section = section[: section.index("\n#### ") if "\n#### " in section else section.index("\n### ")]
    return [b.strip("\n") for b in re.findall(r"```\n(.*?)```", section, re.DOTALL)]


@pytest.mark.skipif(not SEED.is_file(), reason=f"seed document not found at {SEED}")
def test_seed_formats_render_byte_for_byte_as_the_seed() -> None:
    blocks = _seed_example("#### 1. 专业心理咨询师格式")
    example = blocks[0]
    question = example.split("问题：", 1)[1].split("\n", 1)[0]
    options = dict(re.findall(r"^([A-E])\. (.+)$", example, re.M))
    item = BenchItem("x", question, tuple((k.lower(), v) for k, v in sorted(options.items())), "a")
    prof = load_format("seed004-professional").conversation(item)
    assert is_plain(prof) and prof[0]["content"] == example
    simple = load_format("seed004-simple").conversation(item)
    assert is_plain(simple) and simple[0]["content"] == _seed_example("#### 2. 简单直接格式")[0]
    system, user = _seed_example("#### 3. 对话格式")[:2]
    assert load_format("seed004-chat").conversation(item) == [{"role": "system", "content": system},
                                                               {"role": "user", "content": user}]
    assert {"en-professional", "en-bare", "en-chat"} <= set(available_formats())  # ours, renamed


def test_user_prompt_format_file_and_errors(tmp_path, bench_file) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("user: 'Q: {question} {options}'\noption_line: '({letter}) {text}'\nletter_case: lower\n")
    fmt = load_format(str(mine))
    assert fmt.name == "mine" and fmt.render == "chat"
    assert fmt.conversation(load_bench(bench_file).items[2])[0]["content"] == "Q: Yes or no? (a) Yes.\n(b) No."
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: '{question}'\n")
    with pytest.raises(EvalError, match="bad.yaml: field 'user' must .* {options}"):
        load_format(str(bad))
    bad.write_text("user: '{options}'\ntemperature: 0\n")
    with pytest.raises(EvalError, match=r"bad.yaml: unknown fields \['temperature'\]"):
        load_format(str(bad))
    bad.write_text("user: '{options}'\nrender: raw\n")
    with pytest.raises(EvalError, match="field 'render' must be 'chat' or 'plain'"):
        load_format(str(bad))
    with pytest.raises(EvalError, match="unknown prompt format 'nope'"):
        load_format("nope")


@pytest.mark.parametrize(
    ("text", "strict", "lenient"),
    [
        ("C", "c", "c"), (" c.", "c", "c"), ("(B) second", "b", "b"), ("**D**", "d", "d"), ("Answer: A", "a", "a"),
        ("The answer is B.", "b", "b"), ("答案：C", "c", "c"), ("A\n\nBecause ...", "a", "a"), ("B - second", "b", "b"),
        ("I think it is C", None, "c"),  # a lone capital letter
        ("Option C is correct", None, "c"), ("I would choose (D) here", None, "d"), ("选B，因为……", None, "b"),
        ("答案是 A 吧", None, "a"),
        ("E", None, None),  # not an option of a 4-option item
        ("", None, None), ("A patient should be referred", None, None),  # prose, not a letter
        ("Cognitive therapy", None, None),
    ],
)
def test_letter_extraction_strict_and_lenient(text, strict, lenient) -> None:
    keys = ["a", "b", "c", "d"]
    assert parse_letter(text, keys) == strict
    assert parse_letter_lenient(text, keys) == lenient


def test_score_counts_unparsed_as_wrong(bench_file) -> None:
    items = load_bench(bench_file).items
    m = score(items, ["c", None, "a"])
    assert m["n"] == 3 and m["correct"] == 1 and m["unparsed"] == 1
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["by_n_options"] == {"2": {"n": 1, "correct": 0, "accuracy": 0.0},
                                 "4": {"n": 1, "correct": 1, "accuracy": 1.0},
                                 "5": {"n": 1, "correct": 0, "accuracy": 0.0}}
    lo, hi = m["ci95"]
    assert lo < 1 / 3 < hi


def test_bias_letter_distribution_and_constant_baselines(bench_file) -> None:
    items = load_bench(bench_file).items  # answers c, e, b
    b = bias(items, ["a", "a", None])
    assert b["predicted"] == {"A": 2, "B": 0, "C": 0, "D": 0, "E": 0, "unparsed": 1}
    assert b["gold"] == {"A": 0, "B": 1, "C": 1, "D": 0, "E": 1}
    assert b["always_letter"] == pytest.approx({"A": 0, "B": 1 / 3, "C": 1 / 3, "D": 0, "E": 1 / 3})
    assert b["best_constant"] == {"letter": "B", "accuracy": pytest.approx(1 / 3)}  # first of the tied best
    assert b["chance"] == pytest.approx((1 / 4 + 1 / 5 + 1 / 2) / 3)


def _content(prompt: str, opts: list[str]) -> dict[str, str]:
    return dict(re.findall(r"^([A-E])\. (.+)$", prompt, re.M))


@pytest.mark.parametrize("mode", ["loglik", "generate"])
def test_debiased_accuracy_always_a_is_chance_and_a_perfect_model_is_one(bench_file, mode) -> None:
    bench = load_bench(bench_file)
    fmt = load_format("en-bare")
    truth = {it.question: dict(it.options)[it.answer] for it in bench.items}

    def perfect(prompt: str, opts: list[str]) -> str:
        q = next(q for q in truth if q in prompt)
        return next(L for L, t in _content(prompt, opts).items() if t == truth[q])

    spec = GenerationSpec(max_new_tokens=50)
    always_a = debiased(bench.items, fmt, ScriptedBackend(pick=lambda p, o: "A"), mode, spec)
    assert always_a["majority_accuracy"] == pytest.approx((1 / 4 + 1 / 5 + 1 / 2) / 3)  # exactly chance
    assert always_a["queries"] == 4 + 5 + 2  # one per cyclic shift of each item's options
    best = debiased(bench.items, fmt, ScriptedBackend(pick=perfect), mode, spec)
    assert best["majority_accuracy"] == 1.0
    if mode == "loglik":
        assert always_a["mean_prob_accuracy"] == pytest.approx((1 / 4 + 1 / 5 + 1 / 2) / 3)
        assert best["mean_prob_accuracy"] == 1.0


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
        replies={"first": "C", "x": "<think>\nhmm\n</think>\n\nThe answer is F", "Yes.": "I'd say B, no."},
    )
    opts = Options(bench_file=str(bench_file), formats=["en-chat", "en-bare"], debias=False)
    res = get_plugin("psychcounsel_bench").run(EvalContext("psychcounsel", tmp_path, backend=backend, options=opts))
    chat = res.metrics["formats"]["en-chat"]
    assert (chat["correct"], chat["unparsed"], chat["n"]) == (2, 0, 3)  # loglik picks c, e, a
    assert res.metrics["primary"]["format"] == "en-chat" and res.metrics["scoring"] == "loglik"
    assert res.metrics["excluded"] == [{"id": "4", "reason": "empty question"}, {"id": "5", "reason": "1 option(s)"}]
    assert backend.calls[0] == ("loglik", [["A", "B", "C", "D"], ["A", "B", "C", "D", "E"], ["A", "B"]])
    assert [r["chosen"] for r in res.items if r["format"] == "en-bare"] == ["c", "e", "a"]
    assert (tmp_path / "psychcounsel_accuracy.png").is_file()
    assert "| en-chat | chat | 3 | 0.6667 |" in res.report and "id 4 (empty question), id 5 (1 option(s))" in res.report
    assert "| en-chat | 1 | 0 | 1 | 0 | 1 | 0 |" in res.report  # predicted letters: c, e, a
    assert "(gold answers) | 0 | 1 | 1 | 0 | 1 |" in res.report

    sampled = GenerationSpec(max_new_tokens=50, decoding="sample", seed=7)  # the task's psy.generation
    res = get_plugin("psychcounsel_bench").run(EvalContext(
        TaskInfo("psychcounsel", generation=sampled), tmp_path, backend=backend,
        options=Options(bench_file=str(bench_file), scoring="generate", formats=["en-bare"], debias=False)))
    bare = res.metrics["formats"]["en-bare"]
    # "F" is not an option: unparsed both ways; "I'd say B, no." is unparsed strictly, B leniently
    assert (bare["correct"], bare["unparsed"], bare["think_blocks"]) == (1, 2, 1)
    assert (bare["lenient"]["correct"], bare["lenient"]["unparsed"]) == (2, 1)
    used = backend.calls[-1][1]  # the task's spec reached the backend, with the format's rendering applied
    assert (used.max_new_tokens, used.decoding, used.seed, used.prompt) == (50, "sample", 7, "chat")
    assert [r["output"] for r in res.items] == ["C", "The answer is F", "I'd say B, no."]
    assert get_plugin("psychcounsel_bench").paired(res.items) == {"en-bare": {"1": True, "2": False, "3": False}}


def test_plugin_with_debiasing_reports_its_cost(tmp_path, bench_file) -> None:
    res = get_plugin("psychcounsel_bench").run(EvalContext(
        "psychcounsel", tmp_path, backend=ScriptedBackend(pick=lambda p, o: "A"),
        options=Options(bench_file=str(bench_file), formats=["en-bare"])))
    m = res.metrics["formats"]["en-bare"]
    assert m["debiased"]["queries"] == 11 and m["debiased"]["majority_accuracy"] == pytest.approx(m["bias"]["chance"])
    assert "11 extra queries" in res.report
    # with 3 items any accuracy is within the CI of always answering the most frequent gold letter
    assert "accuracy 0.0000 is within its 95% CI of always answering 'B'" in res.report
    assert [r["debiased_credit"] for r in res.items] == pytest.approx([1 / 4, 1 / 5, 1 / 2])


def test_a_prompt_format_given_by_path_can_come_first(tmp_path, bench_file) -> None:
    mine = tmp_path / "my-format.yaml"
    mine.write_text("name: terse\nuser: '{question} {options}'\n")
    backend = ScriptedBackend(logps={"first": [-3, -2, -0.1, -5], "x": [-1, -1, -1, -1, -0.5],
                                     "Yes.": [-0.2, -0.9]})
    res = get_plugin("psychcounsel_bench").run(EvalContext(
        "psychcounsel", tmp_path, backend=backend, options=Options(bench_file=str(bench_file),
                                                                   formats=[str(mine), "en-bare"], debias=False)))
    assert res.metrics["primary"]["format"] == "terse" and set(res.metrics["formats"]) == {"terse", "en-bare"}


def test_options_are_typed() -> None:
    from psyfactory.plugins.psychcounsel_bench import PsychCounselBenchPlugin

    with pytest.raises(EvalError, match=r"psy.eval_options.psychcounsel_bench.scoring: Input should be 'loglik' or "):
        PsychCounselBenchPlugin.parse_options({"scoring": "logprob"})
    with pytest.raises(EvalError, match=r"unknown key 'psy.eval_options.psychcounsel_bench.formt' \(did you mean"):
        PsychCounselBenchPlugin.parse_options({"formt": ["bare"]})
    plugin = PsychCounselBenchPlugin()
    assert plugin.needs_backend and not plugin.uses_samples and not plugin.needs_generations(Options())
    assert plugin.needs_loglik(Options()) and not plugin.needs_loglik(Options(scoring="generate"))


def test_plugin_needs_bench_file(tmp_path) -> None:
    with pytest.raises(EvalError, match="PsychCounsel-Bench file not found"):
        get_plugin("psychcounsel_bench").run(EvalContext(
            "psychcounsel", tmp_path, backend=ScriptedBackend(), options=Options(bench_file=str(tmp_path / "x"))))


@pytest.mark.parametrize(("content", "says"), [
    (b"[]", "holds no items"),
    (json.dumps([{"id": 1, "question": "q?", "options": {"a": "x", "b": "y"}, "answer": "a"}] * 2).encode(),
     "item #1 repeats id '1' of item #0"),
    (json.dumps([{"id": 1, "question": "心理咨询", "options": {"a": "是", "b": "否"}, "answer": "a"}],
                ensure_ascii=False).encode("gbk"), "not UTF-8"),
])
def test_a_bad_bench_file_is_one_error(tmp_path, content, says) -> None:
    path = tmp_path / "bench.json"
    path.write_bytes(content)
    with pytest.raises(EvalError, match=says):
        load_bench(path)
