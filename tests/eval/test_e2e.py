"""`make eval` / `make compare` end to end on the session's tiny run (CPU): every task, base and tuned
variants, eval-only PsychCounsel-Bench with two benchmark files kept apart, the overwrite guard, and
compare with paired tests. Most calls run the CLI in-process; one goes through `make`."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from psyutil import cli, one_error_line

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
    for task in ("psydt", "cpsycoun", "psyqa", "es"):
        cli("eval", "--model", "tiny", "--task", task, "--hw", "cpu", "--base", "psy.max_new_tokens=16")
    # the eval-only benchmark on the student run: base and tuned, the task's file and a second one
    for extra in ([], ["--base"]):
        cli("eval", "--run", run, "--task", "psychcounsel", "--hw", "cpu", "--limit", "30", *extra)
    cli("eval", "--run", run, "--task", "psychcounsel", "--hw", "cpu", "--bench-file", env["PSY_BENCH_COPY"])

    # student: every output accounted for, safety recall present, confusion PNG written
    tuned = variant_dir(env, run, "tuned")
    m = json.loads((tuned / "metrics.json").read_text())
    jl = m["plugins"]["json_labels"]
    assert (m["run"], m["variant"], m["kind"], m["n"], jl["n"]) == (run, "tuned", "tuned", 6, 6)
    assert jl["valid"] + sum(jl["failure_kinds"].values()) == 6
    assert set(jl["safety_recall"]) == {"suicidal", "self_harm"}
    assert (tuned / "risk_flag_confusion.png").is_file()
    report = (tuned / "report.md").read_text()
    assert report.index("Safety: risk_flag recall") < report.index("| field | exact accuracy")
    assert m["adapter"].endswith("tiny/student/lora/adapter")
    stages = json.loads((tuned.parent.parent / "manifest.json").read_text())["stages"]
    assert {"train", "eval/tuned", "eval/base"} <= set(stages) and stages["eval/tuned"]["headline"]["json_labels.n"] == 6

    base = json.loads((variant_dir(env, "tiny/emotion/lora", "base") / "metrics.json").read_text())
    assert base["adapter"] is None and base["plugins"]["classification"]["n"] == 6
    preds = [json.loads(line) for line in (variant_dir(env, "tiny/emotion/lora", "base") / "predictions.jsonl").open()]
    assert len(preds) == 6 and preds[0]["reference"] == "sadness"
    for task in ("psydt", "cpsycoun", "psyqa", "es"):
        g = json.loads((variant_dir(env, f"tiny/{task}/lora", "base") / "metrics.json").read_text())
        assert g["plugins"]["generation"]["n"] == 3 and 0.0 <= g["plugins"]["generation"]["rouge-l"] <= 1.0

    pc = json.loads((variant_dir(env, run, "psychcounsel-tuned") / "metrics.json").read_text())
    bench = pc["plugins"]["psychcounsel_bench"]
    assert bench["scoring"] == "loglik" and set(bench["formats"]) == {"professional", "bare", "chat"}
    n_items = min(30, len(json.loads(Path(bench["bench_file"]).read_text())))
    assert all(f["n"] == n_items and f["unparsed"] == 0 for f in bench["formats"].values())
    other = json.loads((variant_dir(env, run, "psychcounsel-tuned-mybench") / "metrics.json").read_text())
    assert other["plugins"]["psychcounsel_bench"]["n_items"] == 3  # the second file's results, kept apart

    out = cli("compare").stdout
    runs = Path(env["PSY_RUNS_DIR"])
    md = (runs / "compare.md").read_text()
    assert "# Base vs tuned" in out and "## tiny · student" in md and "## tiny · psychcounsel" in md
    assert "| tiny/student/lora | psychcounsel-tuned-mybench |" in md
    assert "| tiny | psychcounsel | tiny/student/lora | psychcounsel-tuned | tiny/student/lora · psychcounsel-base " \
           "| psychcounsel_bench | professional |" in md
    assert "| tiny | student | tiny/student/lora | tuned | tiny/student/lora · base | json_labels | risk_flag |" in md
    rows = list(csv.DictReader((runs / "compare.csv").open()))
    assert {r["task"] for r in rows} == {"student", "emotion", "psydt", "cpsycoun", "psyqa", "es", "psychcounsel"}
    acc = next(r for r in rows if r["variant"] == "tuned" and r["metric"] == "json_labels.validity_rate")
    assert acc["base_variant"] == "base" and float(acc["delta"]) == pytest.approx(
        float(acc["value"]) - float(acc["base_value"]))
    only = cli("compare", "--run", "tiny/emotion/lora").stdout
    assert "## tiny · emotion" in only and "student" not in only.split("\n", 3)[-1]


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
    err = one_error_line(cli("eval", "--model", "tiny", "--task", "emotion", "--hw", "cpu", "--base", "--scoring",
                             "generate", check=False))
    assert "--scoring: none of the plugins of task 'emotion' (classification) takes this option" in err
    err = one_error_line(cli("eval", "--run", "tiny/student/lora", "--task", "psychcounsel", "--hw", "cpu",
                             "--bench-file", "/nonexistent.json", check=False))
    assert "PsychCounsel-Bench file not found: /nonexistent.json" in err
