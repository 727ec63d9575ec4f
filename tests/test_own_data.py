"""docs/own-data.md run as written: a task of one's own from a sharegpt JSONL and a CSV (shipped in
tests/fixtures/own_data/, written by us), prepared, trained on tiny, evaluated with two plugins and
compared through `make`; then an adapter trained by plain `llamafactory-cli train` evaluated and asked.
No Python of the repo is added for either task."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from psyutil import cli, one_error_line

from psyfactory.core.paths import REPO_ROOT

DOC = REPO_ROOT / "docs" / "own-data.md"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "own_data"


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_the_page_shows_the_shipped_task_files():
    text = DOC.read_text(encoding="utf-8")
    for name in ("mycounsel", "mytriage"):
        shipped = (FIXTURES / "configs" / "tasks" / f"{name}.yaml").read_text(encoding="utf-8")
        psy = shipped[shipped.index("psy:"):]
        assert psy.strip() in text, f"docs/own-data.md does not show {name}.yaml's psy block as shipped"


def test_a_bad_data_declaration_is_one_line_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "mine.yaml").write_text("psy:\n  data: {file: x.jsonl, format: sharegpt, "
                                                  "columns: {prompt: q}}\n", encoding="utf-8")
    monkeypatch.setenv("PSY_CONFIG_DIRS", str(tmp_path))
    err = one_error_line(cli("prep", "--task", "mine", check=False))
    assert "mine.yaml" in err and "columns: prompt not a sharegpt column (valid: messages, system)" in err
    (tmp_path / "tasks" / "mine.yaml").write_text("psy:\n  data: {file: x.txt}\n", encoding="utf-8")
    assert "a data file ends in .json, .jsonl, .csv, .parquet" in one_error_line(cli("prep", "--task", "mine",
                                                                                     check=False))


@pytest.mark.slow
def test_own_data_page_end_to_end(tmp_path, tiny_model):
    work = tmp_path / "own"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSY_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for block in bash_blocks():
        script = block.replace("/tmp/psy-own", str(work)).replace("$HOME/.cache/psyfactory/models/tiny-v1",
                                                                   str(tiny_model))
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"{script}\n---\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        env_lines = [ln for ln in script.splitlines() if ln.startswith("export ")]
        for line in env_lines:  # later blocks see the page's exports, as a shell session would
            for k, v in re.findall(r"(\w+)=(\S+)", line):
                env[k] = v.replace("$PWD", str(REPO_ROOT))
    acc = json.loads((work / "data" / "prep_accounting.json").read_text())
    counsel, triage = acc["mycounsel"][0], acc["mytriage"][0]
    assert (counsel["read"], counsel["written"]) == (23, 20)
    assert counsel["quarantined"] == {"duplicate": 1, "no_final_reply": 1, "truncated_json": 1}
    assert counsel["samples"] == {"eval": 4, "train": 16} and triage["samples"] == {"eval": 6, "train": 18}
    assert triage["quarantined"] == {"empty_field": 1}
    runs = work / "runs"
    for task in ("mycounsel", "mytriage"):
        for variant in ("tuned", "base"):
            assert (runs / "tiny" / task / "lora" / "eval" / variant / "metrics.json").is_file(), (task, variant)
    m = json.loads((runs / "tiny" / "mytriage" / "lora" / "eval" / "tuned" / "metrics.json").read_text())
    assert set(m["plugins"]) == {"classification", "generation"} and m["plugins"]["classification"]["n"] == 6
    compare = (runs / "compare.md").read_text()
    assert "mytriage" in compare and "mycounsel" in compare and "McNemar" in compare
    ext = runs / "external" / "lf-adapter"
    manifest = json.loads((ext / "manifest.json").read_text())
    assert manifest["run"]["model"] == "tiny" and manifest["external"]["adapter"] == str(work / "lf-adapter")
    assert len(manifest["external"]["adapter_sha256"]) == 64
    tuned = json.loads((ext / "eval" / "tuned" / "metrics.json").read_text())
    assert tuned["adapter"] == str(work / "lf-adapter") and tuned["fingerprint"]["adapter_sha256"]
    asked = [json.loads(line) for f in (ext / "ask").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [a["prompt"] for a in asked] == ["我最近总是失眠，怎么办？"]
    assert asked[0]["generation"]["max_new_tokens"] == 64 and "base" in asked[0] and "tuned" in asked[0]
