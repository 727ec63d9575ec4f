"""`make eval` / `make compare` end to end on the session's tiny run (CPU): every task, base and tuned
variants, eval-only PsychCounsel-Bench with two benchmark files kept apart, the overwrite guard, and
compare with paired tests. Most calls run the CLI in-process; one goes through `make`."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from psyutil import cli, one_error_line, psy

from psyfactory.core.paths import REPO_ROOT as REPO

pytestmark = pytest.mark.slow

HANDWRITTEN_BENCH = [
    {"id": 1, "question": "Which skill mirrors the client's feelings back to them?",
     "options": {"a": "reflection of feeling", "b": "interpretation", "c": "confrontation", "d": "advice giving"},
     "answer": "a"},
    {"id": 2, "question": "Is a counselor allowed to share session notes without consent?",
     "options": {"b": "no", "a": "yes"}, "answer": "b"},
    {"id": 3, "question": "A counselor must break confidentiality when",
     "options": {"a": "a client is late", "b": "a parent asks", "c": "there is imminent danger to others",
                 "d": "the session ends", "e": "a colleague is curious"}, "answer": "c"},
]


@pytest.fixture(scope="module")
def env(tiny_run, tmp_path_factory, eval_dataset_writer, real_bench_file):
    root = tmp_path_factory.mktemp("e2e")
    raw = root / "raw"
    if real_bench_file:  # the real benchmark sample next to the checkout (first items only)
        raw = real_bench_file.parent.parent
    else:
        (raw / "PsychCounsel-Bench").mkdir(parents=True)
        (raw / "PsychCounsel-Bench" / "PsychCounsel-Bench.json").write_text(json.dumps(HANDWRITTEN_BENCH))
    (root / "mybench.json").write_text(json.dumps(HANDWRITTEN_BENCH))
    values = tiny_run.env(PSY_DATASET_DIR=str(eval_dataset_writer(root / "dataset")), PSY_RAW_DIR=str(raw),
                          PSY_BENCH_COPY=str(root / "mybench.json"))
    with pytest.MonkeyPatch.context() as mp:
        for key in ("PSY_RUNS_DIR", "PSY_DATASET_DIR", "PSY_RAW_DIR"):
            mp.setenv(key, values[key])
        yield values


def variant_dir(env: dict[str, str], run: str, variant: str) -> Path:
    return Path(env["PSY_RUNS_DIR"]) / run / "eval" / variant


def test_make_eval_and_compare_all_tasks(env) -> None:
    run = "tiny/student/lora"
    proc = subprocess.run(["make", "eval", f"RUN={run}", "HW=cpu"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli("eval", "--run", run, "--hw", "cpu", "--base")
    cli("eval", "--model", "tiny", "--task", "emotion", "--hw", "cpu", "--base")
    for task in ("psydt", "cpsycoun", "psyqa", "es", "es_summary"):
        cli("eval", "--model", "tiny", "--task", task, "--hw", "cpu", "--base", "psy.generation.max_new_tokens=16")
    cli("eval", "--run", run, "--task", "seed004-exact", "--hw", "cpu", "--limit", "10")
    # the eval-only benchmark on the student run: base and tuned, the task's file and a second one
    for extra in ([], ["--base"]):
        cli("eval", "--run", run, "--task", "psychcounsel", "--hw", "cpu", "--limit", "30", *extra)
    cli("eval", "--run", run, "--task", "psychcounsel", "--hw", "cpu",
        f"psy.eval_options.psychcounsel_bench.bench_file={env['PSY_BENCH_COPY']}")

    # student: every output accounted for, safety recall present, confusion PNG written
    tuned = variant_dir(env, run, "tuned")
    m = json.loads((tuned / "metrics.json").read_text())
    jl = m["plugins"]["json_labels"]
    assert (m["run"], m["variant"], m["kind"], m["n"], jl["n"]) == (run, "tuned", "tuned", 6, 6)
    assert jl["valid"] + sum(jl["failure_kinds"].values()) == 6
    assert set(jl["safety_recall"]) == {"suicidal", "self_harm", "violence"}
    assert (tuned / "risk_flag_confusion.png").is_file()
    report = (tuned / "report.md").read_text()
    assert report.index("Safety: risk_flag recall") < report.index("| field | exact accuracy")
    # one example per risk class: too few to measure, said so (recall null, the count kept)
    assert all(t["support"] == 1 and t["recall"] is None for t in jl["safety"]["classes"].values())
    assert jl["safety_recall"] == {"suicidal": None, "self_harm": None, "violence": None}
    assert "| suicidal | 1 |" in report and "not measurable" in report
    # the crisis safety net on the inputs: items 2 (活着没意思) and 3 (划手臂) hold explicit crisis language
    sn = jl["safety_net"]
    items = {it["id"]: it for it in map(json.loads, (tuned / "json_labels_items.jsonl").read_text().splitlines())}
    assert {i: it["net"]["class"] for i, it in items.items()} == {
        "1": None, "2": "suicidal", "3": "self_harm", "4": None, "5": None, "6": None}
    for it in items.values():
        model = it["parsed"]["risk_flag"] if it["valid"] else None
        assert it["net"]["model"] == model
        assert it["net"]["raised"] == (it["net"]["class"] is not None and model in (None, "none"))
        assert it["net"]["value"] == (it["net"]["class"] if it["net"]["raised"] else model)  # never lowered
    assert sn["raised"] == sum(it["net"]["raised"] for it in items.values())
    for c in ("suicidal", "self_harm", "violence"):
        assert sn["model_net"][c]["found"] >= sn["model"][c]["found"]
    assert (sn["lexicon_alone"]["suicidal"]["found"], sn["lexicon_alone"]["violence"]["found"]) == (1, 0)
    assert "### Crisis safety net" in report and "| risk_flag | recall: model | recall: model + net |" in report
    print("\n".join(line for line in report.splitlines() if line.startswith("| ") and "/" in line))
    assert m["adapter"].endswith("tiny/student/lora/adapter")
    stages = json.loads((tuned.parent.parent / "manifest.json").read_text())["stages"]
    assert {"train", "eval/tuned", "eval/base"} <= set(stages) and stages["eval/tuned"]["headline"]["json_labels.n"] == 6

    base = json.loads((variant_dir(env, "tiny/emotion/lora", "base") / "metrics.json").read_text())
    cls = base["plugins"]["classification"]
    assert base["adapter"] is None and cls["n"] == 6 and cls["scoring"] == "loglik" and cls["invalid"] == 0
    assert not (variant_dir(env, "tiny/emotion/lora", "base") / "predictions.jsonl").exists()  # nothing generated
    items = [json.loads(line) for line in (variant_dir(env, "tiny/emotion/lora", "base") / "classification_items.jsonl").open()]
    assert len(items) == 6 and items[0]["reference"] == "sadness" and set(items[0]["logprobs"]) == set(cls["labels"])
    for task in ("psydt", "cpsycoun", "psyqa", "es"):
        g = json.loads((variant_dir(env, f"tiny/{task}/lora", "base") / "metrics.json").read_text())
        assert g["plugins"]["generation"]["n"] == 3 and 0.0 <= g["plugins"]["generation"]["rouge-l"] <= 1.0
    es_dir = variant_dir(env, "tiny/es/lora", "base")
    submission = [json.loads(x) for x in (es_dir / "longemotion_es_submission.jsonl").read_text().splitlines()]
    preds = [json.loads(x)["prediction"] for x in (es_dir / "predictions.jsonl").read_text().splitlines()]
    assert submission == [{"id": i + 1, "experience_and_reflection": p} for i, p in enumerate(preds)]
    summ = json.loads((variant_dir(env, "tiny/es_summary/lora", "base") / "metrics.json").read_text())
    jf = summ["plugins"]["json_fields"]
    assert jf["n"] == 3 and set(jf["fields"]) == {"causes", "symptoms", "treatment_process",
                                                  "characteristics_of_illness", "treatment_effect"}
    seed = json.loads((variant_dir(env, run, "seed004-exact-tuned") / "metrics.json").read_text())
    sb = seed["plugins"]["psychcounsel_bench"]
    assert (sb["scoring"], sb["decoding"], sb["extractor"], sb["denominator"]) == ("generate", "greedy", "seed004", "all")
    assert set(sb["formats"]) == {"seed004-exact-professional", "seed004-exact-simple", "seed004-exact-chat"}
    n_asked = len(json.loads(Path(sb["bench_file"]).read_text())[:10])
    assert sb["n_items"] == n_asked and all(f["n"] == n_asked for f in sb["formats"].values())  # every item counts
    assert all(set(f["extractors"]) == {"strict", "lenient", "seed004"} for f in sb["formats"].values())
    assert seed["dtype_requested"] == "float16" and seed["dtype"] == "float32"  # a CPU runs float32
    records = [json.loads(x) for x in (variant_dir(env, run, "seed004-exact-tuned") / "psychcounsel_bench_items.jsonl"
                                       ).read_text().splitlines()]
    assert len(records) == 3 * n_asked and all({"prompt", "generation", "chosen_seed004", "answer"} <= set(r) for r in records)

    pc = json.loads((variant_dir(env, run, "psychcounsel-tuned") / "metrics.json").read_text())
    bench = pc["plugins"]["psychcounsel_bench"]
    assert bench["scoring"] == "loglik"
    assert set(bench["formats"]) == {"seed004-professional", "seed004-simple", "seed004-chat", "en-professional"}
    assert all(f["n"] == bench["n_items"] and f["unparsed"] == 0 for f in bench["formats"].values())
    first = json.loads(Path(bench["bench_file"]).read_text())[:30]
    excluded = [str(r["id"]) for r in first if not r["question"].strip() or len(r["options"]) < 2]
    assert bench["n_items"] == len(first) - len(excluded) and [e["id"] for e in bench["excluded"]] == excluded
    primary = bench["primary"]
    assert 0 <= primary["debiased"]["majority_accuracy"] <= 1 and primary["debiased"]["queries"] > bench["n_items"]
    report = (variant_dir(env, run, "psychcounsel-tuned") / "report.md").read_text()
    assert "Predicted letters per format" in report and "debiased (majority)" in report
    other = json.loads((variant_dir(env, run, "psychcounsel-tuned-mybench") / "metrics.json").read_text())
    assert other["plugins"]["psychcounsel_bench"]["n_items"] == 3  # the second file's results, kept apart

    out = cli("compare").stdout
    runs = Path(env["PSY_RUNS_DIR"])
    md = (runs / "compare.md").read_text()
    assert "# Base vs tuned" in out and "## tiny · student" in md and "## tiny · psychcounsel" in md
    assert "| tiny/student/lora | psychcounsel-tuned-mybench |" in md
    assert "| tiny | psychcounsel | tiny/student/lora | psychcounsel-tuned | tiny/student/lora · psychcounsel-base " \
           "| psychcounsel_bench | seed004-professional |" in md
    assert "| tiny | student | tiny/student/lora | tuned | tiny/student/lora · base | json_labels | risk_flag |" in md
    assert "json_labels.safety_net.raised" in md and "json_labels.safety_net.recall.suicidal" in md
    rows = list(csv.DictReader((runs / "compare.csv").open()))
    assert {r["task"] for r in rows} == {"student", "emotion", "psydt", "cpsycoun", "psyqa", "es", "es_summary",
                                         "psychcounsel", "seed004-exact"}
    acc = next(r for r in rows if r["variant"] == "tuned" and r["metric"] == "json_labels.validity_rate")
    assert acc["base_variant"] == "base" and float(acc["delta"]) == pytest.approx(
        float(acc["value"]) - float(acc["base_value"]))
    only = cli("compare", "--run", "tiny/emotion/lora").stdout
    assert "## tiny · emotion" in only and "student" not in only.split("\n", 3)[-1]


def test_chat_applies_the_safety_net_to_a_label_task(env) -> None:
    """`make chat` on the student run: LLaMA-Factory's ChatModel, one message at a time, the net on each."""
    proc = psy("chat", "--run", "tiny/student/lora", "--hw", "cpu", "psy.generation.max_new_tokens=48", env=env, timeout=600,
               input="我真的不想活了。\n我同学说他想自杀。\n今天考试考得不错。\nexit\n")
    out = proc.stdout
    assert "crisis safety net on risk_flag: lexicon crisis_lexicon.yaml" in out and out.count("Assistant: ") == 3
    assert "alone: detector sos1k-charngram is not trained" in out  # the net says what it is
    turns = out.split("User: ")[1:]
    assert len(turns) == 4  # three messages, then exit
    first, report, plain = turns[:3]
    # the tiny model's answer is whatever it is: the net either raised it or the model already flagged
    assert "[safety net] risk_flag raised to 'suicidal'" in first or "crisis language in the input ('不想活'" in first
    assert "about someone else (not raised): '自杀' (suicidal)" in report and "raised to" not in report
    assert "[safety net]" not in plain


def test_a_different_evaluation_never_replaces_a_variant_silently(env) -> None:
    run = "tiny/student/lora"
    first = cli("eval", "--run", run, "--task", "psychcounsel", "--hw", "cpu", "--limit", "5", "--variant", "guard")
    again = cli("eval", "--run", run, "--task", "psychcounsel", "--hw", "cpu", "--limit", "5", "--variant", "guard")
    assert "re-running the same evaluation" in again.stdout and first.returncode == 0
    err = one_error_line(cli("eval", "--run", run, "--task", "psychcounsel", "--hw", "cpu", "--limit", "6",
                             "--variant", "guard", check=False))
    assert "holds results of a different evaluation (differs in: limit)" in err and "--overwrite" in err
    cli("eval", "--run", run, "--task", "psychcounsel", "--hw", "cpu", "--limit", "6", "--variant", "guard",
        "--overwrite")
    m = json.loads((variant_dir(env, run, "guard") / "metrics.json").read_text())
    assert m["plugins"]["psychcounsel_bench"]["n_items"] == 6


def test_eval_errors_are_clear(env) -> None:
    err = one_error_line(cli("eval", "--model", "tiny", "--task", "psyqa", "--hw", "cpu", check=False))
    assert "no adapter at" in err and "make train MODEL=tiny TASK=psyqa" in err
    err = one_error_line(cli("eval", "--model", "tiny", "--task", "psychcounsel", "--hw", "cpu", check=False))
    assert "eval-only" in err
    err = one_error_line(cli("eval", "--model", "tiny", "--task", "emotion", "--hw", "cpu", "--base",
                             "psy.eval_options.classification.rubric=cpsycoune_turn", check=False))
    assert "unknown key 'psy.eval_options.classification.rubric'" in err
    err = one_error_line(cli("eval", "--run", "tiny/student/lora", "--task", "psychcounsel", "--hw", "cpu",
                             "psy.eval_options.psychcounsel_bench.bench_file=/nonexistent.json", check=False))
    assert "PsychCounsel-Bench file not found: /nonexistent.json" in err
