"""`make prep TASK=sos1k` then `make eval TASK=sos1k BASE=1` on the tiny model: model alone, the net
alone (lexicon OR detector) and model + net, by level and fold, with the paired test; on the invented
SOS-1K-shaped samples (data_prep/samples), with a detector trained on them."""

from __future__ import annotations

import json

from psyutil import cli

from psyfactory.core.paths import REPO_ROOT

SAMPLES = REPO_ROOT / "data_prep" / "samples"


def test_eval_sos1k_reports_model_net_and_each_part(tmp_path, monkeypatch, tiny_model):
    from psyfactory.crisis import train_detector

    for key, sub in (("PSY_DATASET_DIR", "ds"), ("PSY_RUNS_DIR", "runs"), ("PSY_DETECTOR_DIR", "detectors")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    cli("prep", "--task", "sos1k", "--raw-dir", str(SAMPLES))
    det, _ = train_detector(SAMPLES, quiet=True)
    cli("eval", "--model", "tiny", "--task", "sos1k", "--hw", "cpu", "--base", "psy.generation.max_new_tokens=8")
    out = tmp_path / "runs" / "tiny" / "sos1k" / "lora" / "eval" / "base"
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    jl = m["plugins"]["json_labels"]
    assert jl["n"] == 16 and jl["safety"]["flag"]["model"]["positives"] == 7
    sn = jl["safety_net"]
    # every sample comment is a text the detector was trained on: scored out of fold, said so
    assert sn["detector"]["trained"] and sn["detector"]["scored_out_of_fold"] == 16
    assert sn["detector"]["sha256"] == det.sha256 and str(det.path) in m["fingerprint"]["data_sha256"]
    flag = jl["safety"]["flag"]
    assert set(flag) == {"model", "model_net", "net", "lexicon", "detector"}
    assert flag["model_net"]["found"] >= max(flag["model"]["found"], flag["net"]["found"])  # raise-only
    assert flag["net"]["found"] >= max(flag["lexicon"]["found"], flag["detector"]["found"])  # lexicon OR detector
    groups = jl["safety"]["groups"]
    assert {g: next(iter(t.values()))["n"] for g, t in groups.items()} == {"levels 0-2": 5, "levels 3-5": 4,
                                                                          "levels 6-10": 7}
    assert set(jl["safety"]["breakdown"]["fold"]) == {"1", "2", "3", "4", "5"}
    assert set(jl["safety"]["breakdown"]["level"]) == {"0", "1", "2", "3", "4", "6", "7", "8", "9", "10"}
    assert {"mcnemar", "mcnemar_flag"} <= set(sn)
    items = [json.loads(x) for x in (out / "json_labels_items.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(it["meta"]["level"] in range(11) and it["net"]["detector"]["out_of_fold"] for it in items)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| levels 0-2 | 5 |" in report and "By `level` (`meta.level`)" in report
    assert "recall: detector alone" in report and "exact McNemar" in report
