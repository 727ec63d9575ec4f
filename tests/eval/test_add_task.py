"""The worked examples of docs/evaluation.md, run as written: "Add a plugin" (one file) and "Add a task"
(a schema file + a task YAML, evaluated through the real CLI on the tiny base model)."""

from __future__ import annotations

import json
import re
import sys

import pytest
from psyutil import cli

from psyfactory import plugins
from psyfactory.core import paths
from psyfactory.plugins import EvalContext, Sample, get_plugin

DOC = (paths.REPO_ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")


def block(first_line: str, lang: str) -> str:
    """The fenced code block of docs/evaluation.md whose first line (or the line before it) says `first_line`."""
    for m in re.finditer(rf"```{lang}\n(.*?)```", DOC, re.DOTALL):
        body = m.group(1)
        before = "\n".join(DOC[: m.start()].rstrip().splitlines()[-3:])
        if first_line in body.splitlines()[0] or first_line in before:
            return "\n".join(line.removeprefix("   ") for line in body.splitlines()) + "\n"
    raise AssertionError(f"no ```{lang} block for {first_line!r} in docs/evaluation.md")


def test_add_a_plugin_worked_example(tmp_path, monkeypatch):
    (tmp_path / "exact_match_example.py").write_text(block("# plugins/exact_match.py", "python"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(plugins._EXTRA, "exact_match", "exact_match_example:ExactMatchPlugin")
    assert "exact_match" in plugins.names()
    cls = plugins.plugin_class("exact_match")
    samples = [Sample(str(i), [{"role": "user", "content": "q"}], r) for i, r in enumerate(["joy", "fear", "love"])]
    res = get_plugin("exact_match").run(EvalContext("emotion", tmp_path, samples, [" joy", "fear", "anger"],
                                                    options=cls.parse_options({})))
    assert res.metrics["accuracy"] == pytest.approx(2 / 3)
    assert get_plugin("exact_match").paired(res.items) == {"exact": {"0": True, "1": True, "2": False}}
    sys.modules.pop("exact_match_example", None)


def test_add_a_task_worked_example(tmp_path, monkeypatch, tiny_model):
    configs = tmp_path / "configs"
    (configs / "tasks").mkdir(parents=True)
    schema = tmp_path / "crisis.json"
    schema.write_text(block("evaluation/schemas/crisis.json", "json"), encoding="utf-8")
    task_yaml = block("# Task crisis", "yaml").replace("evaluation/schemas/crisis.json", str(schema))
    (configs / "tasks" / "crisis.yaml").write_text(task_yaml, encoding="utf-8")
    monkeypatch.setenv("PSY_CONFIG_DIRS", str(configs))  # a config folder of one's own: nothing in the repo
    rows = [("我不想活了，今晚就结束", {"crisis": "yes", "urgency": 2}), ("考试没考好，有点难过", {"crisis": "no", "urgency": 0}),
            ("最近总想伤害自己", {"crisis": "yes", "urgency": 1}), ("和室友吵架了，睡不着", {"crisis": "no", "urgency": 0}),
            ("我已经写好了遗书", {"crisis": "yes", "urgency": 2})]
    (configs / "tasks" / "crisis.jsonl").write_text("".join(
        json.dumps({"instruction": "判断是否存在危机，只输出JSON。", "input": t, "output": json.dumps(lab)},
                   ensure_ascii=False) + "\n" for t, lab in rows), encoding="utf-8")
    monkeypatch.setenv("PSY_DATASET_DIR", str(tmp_path / "dataset"))
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))

    cli("prep", "--task", "crisis")  # the task's own file -> data/crisis/{train,eval}.jsonl, registered
    info = json.loads((tmp_path / "dataset" / "dataset_info.json").read_text())
    assert set(info) == {"crisis_train", "crisis_eval"}
    cli("config", "--task", "crisis", "--hw", "cpu")  # preflight accepts the new task and its plugin options
    cli("eval", "--task", "crisis", "--hw", "cpu", "--base", "psy.generation.max_new_tokens=8")
    m = json.loads((tmp_path / "runs" / "tiny" / "crisis" / "lora" / "eval" / "base" / "metrics.json").read_text())
    jl = m["plugins"]["json_labels"]
    assert jl["n"] == 1 and set(jl["field_accuracy"]) == {"crisis", "urgency"}  # 0.2 of 5 records: one in eval
    assert set(jl["safety_recall"]) == {"yes"} and set(jl["ordinal"]) == {"urgency"}
    assert "json_labels.safety_recall.yes" in m["headline"]
    assert (tmp_path / "runs" / "tiny" / "crisis" / "lora" / "eval" / "base" / "crisis_confusion.png").is_file()
