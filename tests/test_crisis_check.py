"""`make crisis-check FILE=... [COLUMN=...]`: the crisis net on a file of texts the test writes itself,
one decision per record to <file>.crisis.jsonl beside it, counts printed; no model."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from psyfactory.core.paths import REPO_ROOT

SAMPLES = REPO_ROOT / "data_prep" / "samples"
TEXTS = [
    ("p1", "我真的不想活了，每天都好累。"),  # the writer's crisis language: lexicon
    ("p2", "我同学说他想自杀。"),  # about someone else: recorded, not raised
    ("p3", "我从没想过自杀。"),  # negated
    ("p4", "今天和朋友去看了电影。"),
    ("p5", "I have been cutting myself again."),  # self-harm, English
    ("p6", "笑死了，这个视频太搞笑了。"),  # no crisis phrase at all
]


def make(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "crisis-check", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    tsv = tmp_path / "posts.tsv"
    tsv.write_text("id\tpost\n" + "".join(f"{i}\t{t}\n" for i, t in TEXTS) + "p7\t\n", encoding="utf-8")
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in TEXTS)
                     + "{broken\n" + json.dumps({"id": "p9"}) + "\n", encoding="utf-8")
    txt = tmp_path / "posts.txt"
    txt.write_text("\n".join(t for _, t in TEXTS) + "\n\n", encoding="utf-8")
    return {"tsv": tsv, "jsonl": jsonl, "txt": txt}


def test_crisis_check_on_a_tsv_without_a_trained_detector(files, tmp_path):
    p = make(f"FILE={files['tsv']}", "COLUMN=post", env={"PSY_DETECTOR_DIR": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr
    out = tmp_path / "posts.crisis.jsonl"
    assert f"6 texts in {files['tsv']} (column post) -> {out}" in p.stdout
    assert "alone: detector sos1k-charngram is not trained" in p.stdout  # the net says it is the lexicon alone
    assert "raised: 2 (suicidal 1, self_harm 1); none: 4" in p.stdout
    assert "lexicon only 2, detector only 0, both 0" in p.stdout
    assert "about someone else 1, negated 1" in p.stdout and "skipped: 1 (no text in 'post': 1)" in p.stdout
    recs = read(out)
    assert [r["index"] for r in recs] == [1, 2, 3, 4, 5, 6, 7] and [r["line"] for r in recs] == [2, 3, 4, 5, 6, 7, 8]
    by_id = {r["id"]: r for r in recs}
    assert by_id["p1"]["raised"] == "suicidal" and by_id["p1"]["fired"] == ["lexicon"] and by_id["p1"]["phrase"] == "不想活"
    assert by_id["p2"]["raised"] == "none" and by_id["p2"]["reports"][0]["phrase"] == "自杀"
    assert by_id["p3"]["raised"] == "none" and by_id["p3"]["negated"][0]["why"]
    assert by_id["p5"]["raised"] == "self_harm" and by_id["p6"]["raised"] == "none" and by_id["p6"]["fired"] == []
    assert by_id["p7"] == {"index": 7, "line": 8, "id": "p7", "raised": None, "skipped": "no text in 'post'"}
    assert "detector" not in by_id["p1"]  # no detector in this net


def test_crisis_check_with_the_detector_on_jsonl_and_txt(files, tmp_path, monkeypatch):
    from psyfactory.crisis import train_detector

    cache = tmp_path / "cache"
    monkeypatch.setenv("PSY_DETECTOR_DIR", str(cache))
    train_detector(SAMPLES, quiet=True)  # the invented samples: real mechanics, meaningless weights
    p = make(f"FILE={files['jsonl']}", env={"PSY_DETECTOR_DIR": str(cache)})
    assert p.returncode == 0, p.stderr
    assert "(column text)" in p.stdout and "OR detector sos1k-charngram (threshold" in p.stdout
    recs = read(tmp_path / "posts.crisis.jsonl")
    assert len(recs) == 8 and [r.get("skipped") for r in recs[6:]] == ["invalid JSON (Expecting property name "
                                                                       "enclosed in double quotes)", "no text in 'text'"]
    first = recs[0]
    assert first["id"] == "p1" and first["raised"] == "suicidal" and "lexicon" in first["fired"]
    assert set(first["detector"]) >= {"name", "fired", "score", "threshold"}
    assert recs[2]["detector"]["vetoed"] == ["'自杀' negated"]  # the lexicon's ruling stands for the detector
    assert recs[4]["detector"]["scored"] is False  # English: the detector abstains
    for r in recs[:6]:  # which part fired agrees with the decision
        assert (r["raised"] != "none") == bool(r["fired"])
        assert ("detector" in r["fired"]) == r["detector"]["fired"]
    p = make(f"FILE={files['txt']}", env={"PSY_DETECTOR_DIR": str(cache)})
    assert p.returncode == 0, p.stderr
    txt = read(tmp_path / "posts.crisis.jsonl")
    assert [r["line"] for r in txt] == [1, 2, 3, 4, 5, 6]
    assert [r["raised"] for r in txt] == [r["raised"] for r in recs[:6]]  # the same texts, the same decisions


def test_crisis_check_errors_are_one_line(files, tmp_path):
    env = {"PSY_DETECTOR_DIR": str(tmp_path / "cache")}
    p = make(f"FILE={files['tsv']}", "COLUMN=body", env=env)
    assert p.returncode == 2 and "error:" in p.stderr and "no column 'body' (columns: id, post)" in p.stderr
    assert "Traceback" not in p.stderr
    other = tmp_path / "posts.xlsx"
    other.write_bytes(b"PK")
    p = make(f"FILE={other}", env=env)
    assert p.returncode == 2 and "crisis-check reads .tsv, .csv, .jsonl, .txt" in p.stderr
    p = make(env=env)
    assert p.returncode == 2 and "which file? FILE=" in p.stderr
    two = tmp_path / "two.tsv"
    two.write_text("a\tb\nx\ty\n", encoding="utf-8")
    p = make(f"FILE={two}", env=env)
    assert p.returncode == 2 and "which column holds the texts? COLUMN=<one of a, b>" in p.stderr
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("我想死".encode("gbk"))
    p = make(f"FILE={gbk}", env=env)
    assert p.returncode == 2 and "line 1: not UTF-8" in p.stderr
