"""seed004-exact: PsychCounsel-Bench as seed 004's author's script ran it. The three prompt texts byte for
byte against fixtures written here by hand from the seed document and the author's script
(yanze-jiang/Qwen3-4B-Fine-tuning-for-Psychological-Counseling-with-RAG@d005dcc,
lora/benchmark/model_original.py: build_psychology_prompt, build_simple_prompt, build_chat_format_prompt),
the author's letter extraction on a table of replies, every item in the denominator, per-item records,
the task's settings, and the dtype a backend loads."""

from __future__ import annotations

import json

import pytest

from psyfactory.config import compose
from psyfactory.core.backend import is_plain
from psyfactory.core.generation import GenerationSpec
from psyfactory.inference import resolve_dtype
from psyfactory.plugins import EvalContext, TaskInfo, get_plugin
from psyfactory.plugins.psychcounsel_bench import BenchItem, Options, extract_seed004, load_bench, load_format

# The seed's worked example item (id 3 of the file), options as the file keys them.
ITEM = BenchItem("3", "An individual's self-esteem is most likely to improve when they credit their success to "
                 "which of the following?", (("a", "Factors within themselves"), ("b", "Factors outside themselves"),
                                             ("c", "Indirect factors"), ("d", "Random factors"), ("e", "Unstable factors")),
                 "a")
Q = ITEM.question
OPTS = "A. Factors within themselves\nB. Factors outside themselves\nC. Indirect factors\nD. Random factors\nE. Unstable factors"
# Format 1: role sentence + newline + 问题：q + blank line + 选项： + newline + options joined by newlines +
# newline + the instruction (no blank line before it, as the seed's template block and the script).
FORMAT1 = ("你是一位专业的心理咨询师，请基于心理学专业知识选择最合适的答案。\n问题：" + Q + "\n\n选项：\n" + OPTS
           + "\n请只输出选项字母（A/B/C/D/E），不要有任何其他文字。")
# Format 2: q + blank line + each option line ending in a newline + a further newline + the request.
FORMAT2 = Q + "\n\n" + OPTS + "\n" + "\n请选择正确答案的字母："
# Format 3: system + user (q + blank line + 选项： + newline + option lines each ending in a newline + newline + 请只输出选项字母：).
FORMAT3_SYSTEM = "你是一位专业的心理咨询师，请根据心理学知识选择最合适的答案。"
FORMAT3_USER = Q + "\n\n选项：\n" + OPTS + "\n" + "\n请只输出选项字母："


def test_exact_formats_equal_the_authors_texts_byte_for_byte() -> None:
    prof = load_format("seed004-exact-professional").conversation(ITEM)
    assert is_plain(prof) and prof[0]["content"] == FORMAT1
    simple = load_format("seed004-exact-simple").conversation(ITEM)
    assert is_plain(simple) and simple[0]["content"] == FORMAT2
    chat = load_format("seed004-exact-chat")
    assert chat.conversation(ITEM) == [{"role": "system", "content": FORMAT3_SYSTEM},
                                       {"role": "user", "content": FORMAT3_USER}]
    # only the chat format runs through the template, with its own default thinking whatever the task says
    task = GenerationSpec(max_new_tokens=50, thinking=False)
    assert (chat.spec(task).thinking, chat.spec(task).prompt) == ("template", "chat")
    assert load_format("seed004-exact-professional").spec(task).prompt == "plain"
    # the project's format 1 follows the seed's worked example instead: one blank line more
    assert load_format("seed004-professional").conversation(ITEM)[0]["content"] == FORMAT1.replace(
        "\n请只输出", "\n\n请只输出")


def test_exact_format_of_a_two_option_item_and_an_empty_question() -> None:
    item = BenchItem("268", "", (("a", "Yes."), ("b", "No.")), "b")
    assert load_format("seed004-exact-simple").conversation(item)[0]["content"] == "\n\nA. Yes.\nB. No.\n\n请选择正确答案的字母："
    assert load_format("seed004-exact-chat").conversation(item)[1]["content"] == "\n\n选项：\nA. Yes.\nB. No.\n\n请只输出选项字母："


@pytest.mark.parametrize(("reply", "letter"), [
    ("答案是B", "b"),  # prefix removed, then the leading letter
    ("B. 因为自尊来自内部归因", "b"),
    ("B", "b"), ("c", "c"),  # lowercase: compared lower-case with the gold key
    ("选项：C", "c"),  # prefix 选项 removed; "：C" has C standing alone
    ("回答：答案是A", "a"),  # two prefixes in the list's order
    ("答：选择D", "d"), ("我选择E。", "e"),
    ("Answer: E", "e"),  # E although a 4-option item has no E: the author's rule does not know the options
    ("the answer is d", "d"),
    ("<think>\n好的，我来分析这道题。\n</think>\n\nC", "c"),  # the think block is not removed
    ("<think>\nOkay, the question asks what a client", "a"),  # ... so the article "a" inside it is read as A
    ("Based on attribution theory", "b"),  # the leading-letter rule reads the B of "Based"
    ("I'd say B.", "d"),  # the d of "I'd" stands alone (an apostrophe is a word boundary) and comes first
    ("选B", None),  # 选B: no word boundary between 选 and B, and 选 is not 选择
    ("我不确定。", None), ("", None), ("   ", None),
    ("Internal factors", None),
])
def test_seed004_extractor_on_a_table_of_replies(reply, letter) -> None:
    assert extract_seed004(reply) == letter


def _bench(tmp_path):
    items = [
        {"id": 1, "question": "Which one?", "options": {"b": "second", "a": "first", "d": "fourth", "c": "third"},
         "answer": "c"},
        {"id": 2, "question": "", "options": {"a": "p", "b": "q"}, "answer": "a"},  # an empty question
        {"id": 3, "question": "Yes or no?", "options": {"a": "Yes.", "b": "No."}, "answer": "b"},
    ]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


class Replies:
    name = "replies"

    def __init__(self, replies):
        self.replies, self.specs = replies, []

    def generate(self, conversations, spec, *, json_schema=None):
        self.specs.append(spec)
        return [self.replies[i % len(self.replies)] for i in range(len(conversations))]

    def render(self, conversation, spec):
        return "RENDERED:" + conversation[-1]["content"]


def test_denominator_all_counts_every_item_and_reports_empty_questions_apart(tmp_path) -> None:
    path = _bench(tmp_path)
    assert load_bench(path).size == 3 and len(load_bench(path).items) == 2  # the project's: 2 scorable
    bench = load_bench(path, keep_all=True)
    assert [it.id for it in bench.items] == ["1", "2", "3"] and bench.empty == ["2"] and bench.excluded == []
    backend = Replies(["<think>\nso it is C\n</think>\n\nC", "A patient", "It is B."])
    opts = Options(bench_file=str(path), scoring="generate", formats=["seed004-exact-simple"], debias=False,
                   extractor="seed004", denominator="all")
    res = get_plugin("psychcounsel_bench").run(EvalContext(
        TaskInfo("seed004-exact", generation=GenerationSpec(max_new_tokens=50)), tmp_path, backend=backend, options=opts))
    m = res.metrics["formats"]["seed004-exact-simple"]
    assert res.metrics["n_items"] == m["n"] == 3 and res.metrics["empty_questions"] == ["2"]
    # seed004: C (right), a from "A patient" (right: the empty question's gold is a), b (right)
    assert (m["correct"], m["extractor"], m["empty_questions"]) == (3, "seed004", {"n": 1, "correct": 1})
    assert m["extractors"]["strict"]["correct"] == 1 and m["extractors"]["lenient"]["correct"] == 2  # C; C and B
    rec = res.items[1]
    assert rec["empty_question"] is True and rec["prompt"] == "RENDERED:\n\nA. p\nB. q\n\n请选择正确答案的字母："
    assert (rec["generation"], rec["chosen_seed004"], rec["chosen_strict"], rec["answer"]) == ("A patient", "a", None, "a")
    assert res.items[0]["generation"].startswith("<think>") and res.items[0]["output"] == "C"
    assert "Denominator: every item of the file (3)" in res.report and "ids 2" in res.report
    assert "accuracy (seed004)" in res.report and "strict acc. (unparsed)" in res.report


def test_the_task_is_the_authors_protocol() -> None:
    c = compose("qwen3-4b", "seed004-exact", hw="cpu")
    gen, opts = c.psy.generation, c.psy.eval_options["psychcounsel_bench"]
    assert (gen.max_new_tokens, gen.decoding) == (50, "greedy")
    assert (opts["scoring"], opts["extractor"], opts["denominator"], opts["debias"]) == ("generate", "seed004", "all", False)
    assert opts["formats"] == ["seed004-exact-professional", "seed004-exact-simple", "seed004-exact-chat"]
    assert c.psy.eval_dtype == "float16" and c.psy.download == ["psychcounsel_bench"]
    project = compose("qwen3-4b", "psychcounsel", hw="cpu").psy.eval_options["psychcounsel_bench"]
    assert (project["scoring"], project.get("denominator", "scorable"), project["debias"]) == ("loglik", "scorable", True)


def test_eval_dtype_is_honoured_on_cuda_and_float32_on_cpu() -> None:
    assert resolve_dtype("float16", "cuda") == "float16" and resolve_dtype("auto", "cuda:0") == "bfloat16"
    assert resolve_dtype("float16", "cpu") == resolve_dtype("auto", "cpu") == "float32"
