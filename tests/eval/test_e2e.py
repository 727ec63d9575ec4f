"""`make eval` / `make compare` end to end on the tiny model (CPU, a few minutes): every task, base and tuned
where an adapter is trained (student, emotion; psychcounsel uses the student adapter)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from psyfactory.paths import REPO_ROOT as REPO

pytestmark = pytest.mark.slow

HANDWRITTEN_BENCH = [
    {"id": 1, "question": "Which skill mirrors the client's feelings back to them?",
     "options": {"a": "reflection of feeling", "b": "interpretation", "c": "confrontation", "d": "advice giving"},
     "answer": "a"},
    {"id": 2, "question": "", "options": {"b": "no", "a": "yes"}, "answer": "b"},
    {"id": 3, "question": "A counselor must break confidentiality when",
     "options": {"a": "a client is late", "b": "a parent asks", "c": "there is imminent danger to others",
                 "d": "the session ends", "e": "a colleague is curious"}, "answer": "c"},
]


@pytest.fixture(scope="module")
def env(tiny_model, tmp_path_factory, eval_dataset_writer, real_bench_file) -> dict[str, str]:
    root = tmp_path_factory.mktemp("e2e")
    raw = root / "raw"
    if real_bench_file:  # the real benchmark sample next to the checkout (first items only)
        raw = real_bench_file.parent.parent
    else:
        (raw / "PsychCounsel-Bench").mkdir(parents=True)
        (raw / "PsychCounsel-Bench" / "PsychCounsel-Bench.json").write_text(json.dumps(HANDWRITTEN_BENCH))
    return {**os.environ, "PSY_DATASET_DIR": str(eval_dataset_writer(root / "dataset")), "PSY_RUNS_DIR": str(root / "runs"),
            "PSY_RAW_DIR": str(raw), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def make(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(["make", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"make {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def eval_dir(env: dict[str, str], task: str, method: str) -> Path:
    return Path(env["PSY_RUNS_DIR"]) / "tiny" / task / method / "eval"


def test_make_eval_and_compare_all_tasks(env) -> None:
    for task in ("student", "emotion"):
        make(env, "train", "MODEL=tiny", f"TASK={task}", "HW=cpu", "ARGS=max_steps=2 save_steps=2")
        make(env, "eval", "MODEL=tiny", f"TASK={task}", "HW=cpu")
        make(env, "eval", "MODEL=tiny", f"TASK={task}", "HW=cpu", "BASE=1")
    for task in ("psydt", "cpsycoun", "psyqa", "es"):
        make(env, "eval", "MODEL=tiny", f"TASK={task}", "HW=cpu", "BASE=1", "ARGS=psy.max_new_tokens=16")
    make(env, "eval", "MODEL=tiny", "TASK=psychcounsel", "HW=cpu", "BASE=1", "EVAL_ARGS=--limit 30")
    make(env, "eval", "MODEL=tiny", "TASK=psychcounsel", "HW=cpu", "ADAPTER_TASK=student", "EVAL_ARGS=--limit 30")

    # student: every output accounted for, safety recall present, confusion PNG written
    m = json.loads((eval_dir(env, "student", "lora") / "metrics.json").read_text())
    jl = m["plugins"]["json_labels"]
    assert m["n"] == 6 and jl["n"] == 6
    assert jl["valid"] + sum(jl["failure_reasons"].values()) >= 6
    assert set(jl["safety_recall"]) == {"suicidal", "self_harm"}
    assert (eval_dir(env, "student", "lora") / "risk_flag_confusion.png").is_file()
    report = (eval_dir(env, "student", "lora") / "report.md").read_text()
    assert report.index("Safety: risk_flag recall") < report.index("| field | exact accuracy")
    assert m["adapter"].endswith("tiny/student/lora/adapter")
    stages = json.loads((eval_dir(env, "student", "lora").parent / "manifest.json").read_text())["stages"]
    assert {"train", "eval"} <= set(stages) and stages["eval"]["headline"]["json_labels.n"] == 6

    m = json.loads((eval_dir(env, "emotion", "base") / "metrics.json").read_text())
    assert m["adapter"] is None and m["plugins"]["classification"]["n"] == 6
    preds = [json.loads(line) for line in (eval_dir(env, "emotion", "base") / "predictions.jsonl").open()]
    assert len(preds) == 6 and preds[0]["reference"] == "sadness"

    for task in ("psydt", "cpsycoun", "psyqa", "es"):
        g = json.loads((eval_dir(env, task, "base") / "metrics.json").read_text())["plugins"]["generation"]
        assert g["n"] == 3 and 0.0 <= g["rouge-l"] <= 1.0

    pc = json.loads((eval_dir(env, "psychcounsel", "lora-student") / "metrics.json").read_text())
    bench = pc["plugins"]["psychcounsel_bench"]
    assert bench["scoring"] == "loglik" and set(bench["formats"]) == {"professional", "bare", "chat"}
    n_items = min(30, len(json.loads(Path(pc["plugins"]["psychcounsel_bench"]["bench_file"]).read_text())))
    assert all(f["n"] == n_items and f["unparsed"] == 0 for f in bench["formats"].values())

    out = make(env, "compare")
    runs = Path(env["PSY_RUNS_DIR"])
    md = (runs / "compare.md").read_text()
    assert "paired base vs tuned (exact McNemar)" in md and "| tiny | psychcounsel | lora-student | professional |" in md
    assert "# Base vs tuned" in out
    rows = list(csv.DictReader((runs / "compare.csv").open()))
    tasks = {r["task"] for r in rows}
    assert tasks == {"student", "emotion", "psydt", "cpsycoun", "psyqa", "es", "psychcounsel"}
    acc = next(r for r in rows if r["task"] == "emotion" and r["metric"] == "classification.accuracy")
    assert acc["base"] != "" and acc["lora"] != "" and float(acc["Δ lora"]) == pytest.approx(
        float(acc["lora"]) - float(acc["base"]))


def test_eval_errors_are_clear(env) -> None:
    proc = subprocess.run(["make", "eval", "MODEL=tiny", "TASK=psyqa", "HW=cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "no adapter at" in proc.stderr and "make train MODEL=tiny TASK=psyqa" in proc.stderr
    proc = subprocess.run(["make", "eval", "MODEL=tiny", "TASK=psychcounsel", "HW=cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "eval-only" in proc.stderr
