"""`make harness` (psyfactory.harness): lm-evaluation-harness on a run, filed as an eval variant.

Without a model: PsychCounsel-Bench's lm-eval task YAML loaded by lm-eval's own TaskManager, lm-eval results
read into the variant format, compare showing them with intervals and McNemar, and every user mistake as one
`error:` line before a model loads. With the session's tiny run (slow): base, adapter (PEFT) and merged model
on a small local copy of CMMLU / C-Eval-shaped data written here (invented items in the real schema) and on
invented PsychCounsel-Bench items, offline; the fingerprint guard; compare; `make harness`; lm-eval's own CLI
with `--include_path`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from psyutil import cli, one_error_line

from psyfactory.compare import compare
from psyfactory.core.paths import REPO_ROOT as REPO

pytest.importorskip("lm_eval", reason="the [harness] extra (lm-evaluation-harness) is not installed")

from psyfactory import harness  # noqa: E402

TASKS_DIR = REPO / "evaluation" / "lm_eval_tasks"

# Invented items (not from any dataset), in the schema of lm-eval's CMMLU (Question/A-D/Answer) and C-Eval
# (id/question/A-D/answer/explanation) tasks.
CMMLU_TEST = [
    {"Question": "来访者中心疗法的创始人是谁？", "A": "弗洛伊德", "B": "罗杰斯", "C": "斯金纳", "D": "埃利斯", "Answer": "B"},
    {"Question": "下列哪一项属于焦虑障碍？", "A": "广泛性焦虑障碍", "B": "双相障碍", "C": "精神分裂症", "D": "帕金森病",
     "Answer": "A"},
    {"Question": "咨询中准确复述来访者感受的技术叫作？", "A": "面质", "B": "解释", "C": "情感反映", "D": "建议", "Answer": "C"},
    {"Question": "保密原则的例外通常包括？", "A": "来访者迟到", "B": "来访者有伤害他人的明确计划", "C": "来访者换了工作",
     "D": "来访者想结束咨询", "Answer": "B"},
]
CMMLU_DEV = [
    {"Question": "心理咨询的第一次会谈通常重点是？", "A": "布置作业", "B": "建立关系与收集资料", "C": "结束咨询", "D": "开药",
     "Answer": "B"},
]
CEVAL_VAL = [
    {"id": 0, "question": "成人正常空腹血糖的参考范围大约是？", "A": "1.0-2.0 mmol/L", "B": "3.9-6.1 mmol/L",
     "C": "8.0-10.0 mmol/L", "D": "12.0-15.0 mmol/L", "answer": "B", "explanation": ""},
    {"id": 1, "question": "下列哪项是抑郁发作的核心症状？", "A": "情绪低落", "B": "幻听", "C": "关节疼痛", "D": "皮疹",
     "answer": "A", "explanation": ""},
    {"id": 2, "question": "听诊心脏常用的器械是？", "A": "叩诊锤", "B": "听诊器", "C": "血压计", "D": "体温计",
     "answer": "B", "explanation": ""},
]
BENCH = [
    {"id": 1, "question": "Which skill mirrors the client's feelings back to them?",
     "options": {"a": "reflection of feeling", "b": "interpretation", "c": "confrontation", "d": "advice giving"},
     "answer": "a"},
    {"id": 2, "question": "", "options": {"a": "left out: empty question", "b": "x"}, "answer": "a"},
    {"id": 3, "question": "May session notes be shared without consent?", "options": {"b": "no", "a": "yes"},
     "answer": "b"},
    {"id": 4, "question": "Confidentiality must be broken when",
     "options": {"a": "a client is late", "b": "a parent asks", "c": "there is imminent danger to others",
                 "d": "the session ends", "e": "a colleague is curious"}, "answer": "c"},
]
TASKS = "cmmlu_professional_psychology,ceval-valid_clinical_medicine,psychcounsel_bench"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_task_data(root: Path) -> tuple[Path, Path]:
    """<root>/lm_eval_data/<task>/<split>.jsonl and a PsychCounsel-Bench file, all invented here."""
    data = root / "lm_eval_data"
    write_jsonl(data / "cmmlu_professional_psychology" / "test.jsonl", CMMLU_TEST)
    write_jsonl(data / "cmmlu_professional_psychology" / "dev.jsonl", CMMLU_DEV)
    write_jsonl(data / "ceval-valid_clinical_medicine" / "val.jsonl", CEVAL_VAL)  # no dev split: dropped at 0-shot
    bench = root / "bench.json"
    bench.write_text(json.dumps(BENCH), encoding="utf-8")
    return data, bench


# ---------------------------------------------------------------------------- PsychCounsel-Bench task YAML


def test_psychcounsel_task_yaml_loads_in_lm_evals_task_manager(tmp_path) -> None:
    from lm_eval.tasks import TaskManager

    _, bench = write_task_data(tmp_path)
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"bench_file": str(bench)})
    assert {"psychcounsel", "psychcounsel_bench", "psychcounsel_bench_professional"} <= set(tm.all_tasks)
    loaded = tm.load(["psychcounsel"])  # the tag: both tasks
    assert sorted(loaded["tasks"]) == ["psychcounsel_bench", "psychcounsel_bench_professional"]
    task = loaded["tasks"]["psychcounsel_bench"]
    docs = list(task.eval_docs)
    assert [d["id"] for d in docs] == ["1", "3", "4"]  # the empty question is left out
    two = docs[1]  # options given as {b, a}: sorted, lettered A-B, the answer 'b' is index 1
    assert task.doc_to_choice(two) == ["A", "B"] and task.doc_to_target(two) == 1
    assert task.doc_to_text(two) == "May session notes be shared without consent?\nA. yes\nB. no\nAnswer:"
    five = docs[2]
    assert task.doc_to_choice(five) == ["A", "B", "C", "D", "E"] and task.doc_to_target(five) == 2
    assert task.config.description.startswith("The following are multiple choice questions")
    pro = loaded["tasks"]["psychcounsel_bench_professional"]
    assert pro.doc_to_text(two).startswith("Question: May session notes") and "licensed" in pro.config.description
    # lm-eval's folder convention: the shared base is not itself a task file, the task files include it
    assert not (TASKS_DIR / "psychcounsel" / "_default_template_yaml").suffix
    for f in (TASKS_DIR / "psychcounsel").glob("*.yaml"):
        assert "include: _default_template_yaml" in f.read_text(encoding="utf-8"), f


def test_psychcounsel_loader_says_what_is_wrong(tmp_path) -> None:
    sys.path.insert(0, str(TASKS_DIR / "psychcounsel"))
    try:
        import utils as bench_utils  # the task folder's hook, as lm-eval imports it
    finally:
        sys.path.remove(str(TASKS_DIR / "psychcounsel"))
        sys.modules.pop("utils", None)
    with pytest.raises(FileNotFoundError, match="PsychCounsel-Bench file not found: .*nope.json.*--metadata"):
        bench_utils.load_bench(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": 7, "question": "q", "options": {"a": "x", "b": "y"}, "answer": "c"}]))
    with pytest.raises(ValueError, match="id=7.*answer 'c' is not an option"):
        bench_utils.load_bench(str(bad))
    assert bench_utils.DEFAULT_BENCH == REPO / "raw" / "PsychCounsel-Bench" / "PsychCounsel-Bench.json"


# ---------------------------------------------------------------------------- results into the variant format

LM_EVAL_RESULTS = {
    "results": {
        "task_a": {"alias": "task_a", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.25,
                   "acc_norm_stderr,none": "N/A"},
        "task_b": {"alias": "task_b", "exact_match,strict-match": 0.98, "exact_match_stderr,strict-match": 0.05},
    },
    "groups": {"grp": {"alias": "grp", "acc,none": 0.5, "acc_stderr,none": 0.1}},
    "group_subtasks": {"grp": ["task_a"]},
    "n-samples": {"task_a": {"original": 10, "effective": 8}, "task_b": {"original": 4, "effective": 4}},
    "n-shot": {"task_a": 0, "task_b": 5}, "versions": {"task_a": 1.0, "task_b": 2.0}, "lm_eval_version": "0.4.13",
}


def test_lm_eval_results_become_plugin_metrics_with_intervals() -> None:
    m = harness.summarize(LM_EVAL_RESULTS)
    a = m["tasks"]["task_a"]
    assert a["primary"] == "acc" and a["acc"] == 0.5 and a["n"] == 8 and a["n_shot"] == 0 and a["version"] == 1.0
    assert a["acc_stderr"] == 0.1 and a["acc_ci95"] == pytest.approx([0.304, 0.696])
    assert a["acc_norm"] == 0.25 and "acc_norm_ci95" not in a  # lm-eval gave no standard error: no interval
    b = m["tasks"]["task_b"]
    assert b["primary"] == "exact_match_strict-match" and b["exact_match_strict-match_ci95"] == pytest.approx([0.882, 1.0])
    assert m["groups"]["grp"]["acc_ci95"] == pytest.approx([0.304, 0.696]) and m["n_docs"] == 12
    plugin = harness.plugin_class("lm_eval")()
    # a group's tasks are left out of the headline (compare's columns): the group stands for them
    assert plugin.headline_keys(m) == ["groups.grp.acc", "tasks.task_b.exact_match_strict-match"]


def test_item_records_and_pairs() -> None:
    samples = [{"doc_id": 0, "target": 2, "metrics": ["acc", "acc_norm"], "acc": 1.0, "acc_norm": 0.0,
                "filtered_resps": [[-3.0, False], [-2.5, False], [-1.0, False]]},
               {"doc_id": 1, "target": 0, "metrics": ["acc"], "acc": 0.0, "filtered_resps": [[-9.0, False], [-1.0, True]]}]
    items = harness.item_records("t", samples)
    assert items[0] == {"id": "t/0", "task": "t", "doc_id": 0, "target": 2, "acc": 1.0, "acc_norm": 0.0,
                        "correct": True, "scores": [-3.0, -2.5, -1.0], "pred": 2}
    assert items[1]["correct"] is False and items[1]["pred"] == 1
    assert harness.plugin_class("lm_eval")().paired(items) == {"t": {"0": True, "1": False}}


def test_variant_names() -> None:
    assert harness.variant_name("tuned", "hf", list(harness.DEFAULT_TASKS), True) == "harness-tuned"
    assert harness.variant_name("base", "vllm", ["psychcounsel_bench"], False) == "harness-base-vllm-psychcounsel_bench"
    long = harness.variant_name("merged", "hf", ["cmmlu_professional_psychology", "ceval-valid_physician"], False)
    assert long.startswith("harness-merged-2tasks-") and len(long) == len("harness-merged-2tasks-") + 8


def test_lm_eval_is_not_a_plugin_a_task_lists() -> None:
    from psyfactory.core.errors import EvalError
    from psyfactory.plugins import TaskInfo, get_plugin

    with pytest.raises(EvalError, match="written by `make harness"):
        get_plugin("lm_eval").check(None, TaskInfo("psydt"))


def write_harness_variant(root: Path, variant: str, kind: str, correct: list[bool], digest: str = "d1") -> None:
    d = root / "r" / "eval" / variant
    d.mkdir(parents=True)
    m = harness.summarize({"results": {"cmmlu_x": {"acc,none": sum(correct) / len(correct), "acc_stderr,none": 0.05}},
                           "n-samples": {"cmmlu_x": {"effective": len(correct)}}})
    fp = {"data_sha256": {"cmmlu_x": digest}, "options": {"lm_eval": {"tasks": ["cmmlu_x"]}}, "generation": None}
    (d / "metrics.json").write_text(json.dumps({"run": "r", "model": "tiny", "task": "harness", "variant": variant,
                                                "kind": kind, "fingerprint": fp, "plugins": {"lm_eval": m}}))
    (d / "lm_eval_items.jsonl").write_text("".join(
        json.dumps({"task": "cmmlu_x", "doc_id": i, "correct": c}) + "\n" for i, c in enumerate(correct)))


def test_compare_shows_harness_scores_with_intervals_and_mcnemar(tmp_path) -> None:
    write_harness_variant(tmp_path, "harness-base", "base", [False] * 6 + [True] * 4)
    write_harness_variant(tmp_path, "harness-tuned", "tuned", [True] * 10)
    write_harness_variant(tmp_path, "harness-tuned-other", "tuned", [True] * 10, digest="d2")  # other data: no base
    md_path, csv_path = compare(tmp_path)
    md = md_path.read_text()
    assert "## tiny · harness" in md and "| run | variant | lm_eval.tasks.cmmlu_x.acc |" in md
    assert "| r | harness-base | 0.4000 [0.3020, 0.4980] |" in md
    assert "| r | harness-tuned | 1.0000 [0.9020, 1.0000] (+0.6000) |" in md
    assert "| r | harness-tuned-other | 1.0000 [0.9020, 1.0000] |" in md
    # 6 discordant documents, all for the tuned model: exact two-sided p = 2 * 0.5**6
    assert "| tiny | harness | r | harness-tuned | r · harness-base | lm_eval | cmmlu_x | 10 | 0.6000 | 0 | 6 | 0.0312 |" in md
    rows = {r["variant"]: r for r in csv.DictReader(csv_path.open())}
    assert float(rows["harness-tuned"]["ci95_low"]) == pytest.approx(0.902) and rows["harness-tuned"]["base_variant"] == "harness-base"


# ---------------------------------------------------------------------------- one line per mistake, no model


def test_mistakes_before_any_index_or_model_are_one_line(workspace, monkeypatch) -> None:
    base = ("harness", "--model", "tiny", "--task", "psydt", "--hw", "cpu")
    err = one_error_line(cli(*base, check=False))
    assert "no adapter at" in err and "make train MODEL=tiny TASK=psydt" in err
    err = one_error_line(cli(*base, "--merged", check=False))
    assert "no merged model at" in err and "make merge RUN=tiny/psydt/lora" in err
    assert "not both" in one_error_line(cli(*base, "--merged", "--base", check=False))
    assert "--limit 0" in one_error_line(cli(*base, "--base", "--limit", "0", check=False))
    assert "--batch-size x" in one_error_line(cli(*base, "--base", "--batch-size", "x", check=False))
    err = one_error_line(cli("harness", "--model", "tiny", "--adapter", str(workspace), check=False))
    assert "TASK=<task>" in err and "TASKS=" in err
    if harness.pick_backend("auto")[0] != "vllm":  # here: vllm is not installed (or no GPU)
        err = one_error_line(cli(*base, "--base", "--backend", "vllm", check=False))
        assert err.startswith("error: --backend vllm: ") and ("not installed" in err or "no CUDA GPU" in err)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if the [harness] extra were not installed
    err = one_error_line(cli(*base, "--base", check=False))
    assert "lm-evaluation-harness is not installed: pip install -e '.[harness]'" in err


def test_task_and_data_mistakes_are_one_line_before_the_model(workspace, tmp_path) -> None:
    """These need lm-eval's task index (seconds), not a model: none of them gets as far as loading one."""
    data, bench = write_task_data(tmp_path)
    base = ("harness", "--model", "tiny", "--task", "psydt", "--hw", "cpu", "--base", "--bench-file", str(bench))
    err = one_error_line(cli(*base, "--tasks", "cmmlu_profesional_psychology", check=False))
    assert "unknown lm-eval task 'cmmlu_profesional_psychology' (did you mean cmmlu_professional_psychology" in err
    # a hub task without a local copy, offline: lm-eval cannot load it, and we say what to do
    err = one_error_line(cli(*base, "--tasks", "cmmlu_anatomy", check=False))
    assert "lm-eval could not load task cmmlu_anatomy" in err and "--data-dir DIR" in err
    (data / "cmmlu_anatomy").mkdir()
    write_jsonl(data / "cmmlu_anatomy" / "dev.jsonl", CMMLU_DEV)
    err = one_error_line(cli(*base, "--tasks", "cmmlu_anatomy", "--data-dir", str(data), check=False))
    assert "no test.jsonl" in err and "scores task cmmlu_anatomy on its 'test' split" in err
    err = one_error_line(cli(*base, "--tasks", "ceval-valid_clinical_medicine", "--data-dir", str(data),
                             "--num-fewshot", "2", check=False))
    assert "2-shot prompts take their examples from the 'dev' split" in err
    err = one_error_line(cli(*base, "--tasks", "cmmlu", "--data-dir", str(data), check=False))
    assert "TASKS=cmmlu is a group or tag: with --data-dir name its tasks" in err
    err = one_error_line(cli(*base, "--tasks", "psychcounsel_bench", "--bench-file", str(tmp_path / "no.json"),
                             check=False))
    assert "PsychCounsel-Bench file not found" in err


# ---------------------------------------------------------------------------- on the tiny run (slow)


@pytest.fixture(scope="module")
def hrun(tiny_run, tmp_path_factory):
    """A copy of the session's trained and merged tiny run in a runs root of its own, and the task data."""
    root = tmp_path_factory.mktemp("harness")
    runs = root / "runs"
    shutil.copytree(tiny_run.dir, runs / tiny_run.name, ignore=shutil.ignore_patterns("eval", "checkpoint-*"))
    data, bench = write_task_data(root)
    env = tiny_run.env(PSY_RUNS_DIR=str(runs), HF_DATASETS_OFFLINE="1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PSY_RUNS_DIR", str(runs))
        yield {"runs": runs, "data": data, "bench": bench, "env": env, "run": tiny_run.name}


def harness_cli(h: dict, *extra: str, check: bool = True):
    return cli("harness", "--run", h["run"], "--hw", "cpu", "--tasks", TASKS, "--data-dir", str(h["data"]),
               "--bench-file", str(h["bench"]), *extra, check=check)


def items(d: Path) -> dict[str, list[float]]:
    return {r["id"]: r["scores"] for r in map(json.loads, (d / "lm_eval_items.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_base_adapter_and_merged_on_local_data_then_compare(hrun) -> None:
    run_dir = hrun["runs"] / hrun["run"]
    # the base model through make (TASKS, BASE, HARNESS_DATA and EVAL_ARGS reach the command)
    proc = subprocess.run(["make", "harness", f"RUN={hrun['run']}", "HW=cpu", "BASE=1", f"TASKS={TASKS}",
                           f"HARNESS_DATA={hrun['data']}", f"EVAL_ARGS=--bench-file {hrun['bench']}"],
                          cwd=REPO, env=hrun["env"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "vLLM not used: " in proc.stdout and "loading task cmmlu_professional_psychology (local files:" in proc.stdout
    tuned = harness_cli(hrun)
    merged = harness_cli(hrun, "--merged")
    assert "+ adapter" in tuned.stdout and "/merged" in merged.stdout
    variant = harness.variant_name("base", "hf", TASKS.split(","), False)
    dirs = {k: run_dir / "eval" / variant.replace("-base-", f"-{k}-") for k in ("base", "tuned", "merged")}
    for kind, d in dirs.items():
        m = json.loads((d / "metrics.json").read_text())
        assert m["task"] == "harness" and m["kind"] == ("base" if kind == "base" else "tuned") and m["target"] == kind
        t = m["plugins"]["lm_eval"]["tasks"]
        assert (t["cmmlu_professional_psychology"]["n"], t["ceval-valid_clinical_medicine"]["n"],
                t["psychcounsel_bench"]["n"]) == (4, 3, 3)  # PsychCounsel: the empty question left out
        for task in t.values():
            lo, hi = task["acc_ci95"]
            assert lo <= task["acc"] <= hi
            assert task["acc_stderr"] > 0 or task["acc"] in (0.0, 1.0)
        assert set(m["headline"]) == {f"lm_eval.tasks.{n}.acc" for n in TASKS.split(",")}
        assert (d / "report.md").read_text().startswith(f"# lm-evaluation-harness: {hrun['run']} · {d.name}")
        assert (d / "lm_eval_tasks" / "cmmlu_professional_psychology.yaml").is_file()
        assert json.loads((d / "lm_eval_results.json").read_text())["lm_eval_version"] == "0.4.13"
        assert not list(d.parent.glob(f".{d.name}.*"))  # nothing staged left behind
    assert dirs["tuned"].joinpath("metrics.json").read_text().count('"peft"') == 1
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert {f"eval/{d.name}" for d in dirs.values()} <= set(stages)
    # the adapter really is applied, and the merged model scores what base + adapter scores
    b, t, mg = (items(dirs[k]) for k in ("base", "tuned", "merged"))
    assert b.keys() == t.keys() == mg.keys() and len(b) == 10
    assert max(abs(x - y) for k in t for x, y in zip(t[k], b[k], strict=True)) > 1e-2
    assert max(abs(x - y) for k in t for x, y in zip(t[k], mg[k], strict=True)) < 1e-3

    # a different evaluation into the same folder is refused, with what differs
    err = one_error_line(harness_cli(hrun, "--base", "--limit", "2", check=False))
    assert f"eval/{variant} holds results of a different evaluation (differs in: limit)" in err
    again = harness_cli(hrun, "--base")
    assert "re-running the same evaluation" in again.stdout

    md = compare(hrun["runs"])[0].read_text()
    assert "## tiny · harness" in md and "lm_eval.tasks.psychcounsel_bench.acc" in md
    for kind in ("tuned", "merged"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {hrun['run']} | {dirs[kind].name} |"))
        assert row.count(" [") == 3 and row.count(" (+") + row.count(" (-") == 3  # interval and Δ per task
        assert f"| {dirs[kind].name} | {hrun['run']} · {variant} | lm_eval | psychcounsel_bench | 3 |" in md


@pytest.mark.slow
def test_lm_eval_users_run_the_psychcounsel_task_with_include_path(hrun, tiny_model) -> None:
    """lm-eval's own command line, no PsyFactory code: the task folder on --include_path, the file by metadata."""
    out = hrun["runs"].parent / "lm_eval_out"
    proc = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
                           f"pretrained={tiny_model}", "--device", "cpu", "--include_path", str(TASKS_DIR),
                           "--tasks", "psychcounsel_bench", "--metadata", json.dumps({"bench_file": str(hrun["bench"])}),
                           "--batch_size", "2", "--output_path", str(out)],
                          cwd=hrun["runs"].parent, env={**os.environ, **hrun["env"]}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in out.rglob("results_*.json")]
    assert len(results) == 1 and results[0]["n-samples"]["psychcounsel_bench"]["effective"] == 3
    assert 0.0 <= results[0]["results"]["psychcounsel_bench"]["acc,none"] <= 1.0
