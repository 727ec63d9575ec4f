"""seed004-exact on the real CPU model (SmolLM2-135M-Instruct): a handful of the shared PsychCounsel-Bench
items, the empty question id 268 among them, through `psyfactory eval --task seed004-exact --base`.
Every item is in the denominator, every generation is stored with its prompt, and the chat format's
prompt is what the model's own chat template renders for the author's messages with no other argument
(hand-built here from the author's script), the plain formats the author's strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from psyutil import cli, real_model_workspace

from psyfactory.core.paths import REPO_ROOT

pytestmark = pytest.mark.slow
BENCH = REPO_ROOT.parent / "shared" / "datasets" / "PsychCounsel-Bench" / "PsychCounsel-Bench.json"
IDS = (3, 268, 208)  # the seed's worked example (5 options), an empty question, a 2-option item


def _authors_texts(item: dict) -> tuple[str, str, list[dict[str, str]]]:
    """The three prompts as the author's script builds them (written from its text, not from our YAMLs)."""
    q, opts = item["question"], item["options"]
    lines = [f"{k.upper()}. {opts[k]}" for k in sorted(opts)]
    f1 = ("你是一位专业的心理咨询师，请基于心理学专业知识选择最合适的答案。\n问题：" + q + "\n\n选项：\n" + "\n".join(lines)
          + "\n请只输出选项字母（A/B/C/D/E），不要有任何其他文字。")
    f2 = q + "\n\n" + "".join(line + "\n" for line in lines) + "\n请选择正确答案的字母："
    user = q + "\n\n选项：\n" + "".join(line + "\n" for line in lines) + "\n请只输出选项字母："
    return f1, f2, [{"role": "system", "content": "你是一位专业的心理咨询师，请根据心理学知识选择最合适的答案。"},
                    {"role": "user", "content": user}]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    if not BENCH.is_file():
        pytest.skip(f"the PsychCounsel-Bench sample is not at {BENCH}")
    items = [it for it in json.loads(BENCH.read_text(encoding="utf-8")) if it["id"] in IDS]
    root = tmp_path_factory.mktemp("seed004_exact")
    bench = root / "bench.json"
    bench.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    with real_model_workspace(root, threads=2):
        cli("eval", "--model", "smollm2-135m", "--task", "seed004-exact", "--base", "--hw", "cpu",
            f"psy.eval_options.psychcounsel_bench.bench_file={bench}")
    variant = next((root / "runs" / "smollm2-135m" / "seed004-exact" / "lora" / "eval").glob("base*"))
    return variant, items


def test_every_item_counts_and_every_generation_is_stored(evaluated) -> None:
    variant, items = evaluated
    m = json.loads((variant / "metrics.json").read_text(encoding="utf-8"))
    bench = m["plugins"]["psychcounsel_bench"]
    assert bench["n_items"] == len(items) == len(IDS) and bench["excluded"] == []
    assert bench["empty_questions"] == ["268"] and bench["denominator"] == "all" and bench["extractor"] == "seed004"
    for f in bench["formats"].values():
        assert f["n"] == len(IDS) and f["empty_questions"]["n"] == 1
        assert f["generation"]["decoding"] == "greedy" and f["generation"]["max_new_tokens"] == 50
    assert m["dtype_requested"] == "float16" and m["dtype"] == "float32"  # asked fp16; a CPU runs fp32
    records = [json.loads(x) for x in (variant / "psychcounsel_bench_items.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 3 * len(IDS)
    assert all(isinstance(r["generation"], str) and r["answer"] in "abcde" for r in records)
    assert any(r["generation"].strip() for r in records)  # a real model answers something


def test_prompts_are_the_authors_and_the_chat_format_goes_through_the_models_template(evaluated) -> None:
    from transformers import AutoTokenizer

    from psyfactory.smollm2 import ensure_smollm2

    variant, items = evaluated
    records = {(r["format"], r["id"]): r for r in map(json.loads, (variant / "psychcounsel_bench_items.jsonl")
                                                     .read_text(encoding="utf-8").splitlines())}
    tok = AutoTokenizer.from_pretrained(ensure_smollm2())
    for item in items:
        f1, f2, messages = _authors_texts(item)
        assert records[("seed004-exact-professional", str(item["id"]))]["prompt"] == f1
        assert records[("seed004-exact-simple", str(item["id"]))]["prompt"] == f2
        chat = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert records[("seed004-exact-chat", str(item["id"]))]["prompt"] == chat
        assert chat.startswith("<|im_start|>system\n你是一位") and chat.endswith("<|im_start|>assistant\n")
    report = (variant / "report.md").read_text(encoding="utf-8")
    assert f"Denominator: every item of the file ({len(IDS)})" in report and "float32 (float16 asked" in report
