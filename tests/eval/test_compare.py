"""`compare` on hand-written run directories: side-by-side table, deltas, paired McNemar, n mismatch note."""

from __future__ import annotations

import csv
import json

import pytest

from psyfactory.evaluate import EvalError, compare


def write_run(root, method, acc, items, n_items=None):
    d = root / "tiny" / "psychcounsel" / method / "eval"
    d.mkdir(parents=True)
    n = n_items or len(items)
    metrics = {"model": "tiny", "task": "psychcounsel", "method": method,
               "plugins": {"psychcounsel_bench": {"n_items": n, "primary": {"accuracy": acc, "unparsed": 0},
                                                  "formats": {"professional": {"accuracy": acc}}}}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "psychcounsel_bench_items.jsonl").write_text("".join(
        json.dumps({"id": str(i), "format": "professional", "correct": c}) + "\n" for i, c in enumerate(items)))


def test_compare_side_by_side_with_mcnemar(tmp_path) -> None:
    write_run(tmp_path, "base", 0.4, [False] * 6 + [True] * 4)
    write_run(tmp_path, "lora-psydt", 1.0, [True] * 10)
    md_path, csv_path = compare(tmp_path)
    md = md_path.read_text()
    assert "| tiny | psychcounsel | psychcounsel_bench.primary.accuracy | 0.4000 | 1.0000 | 0.6000 |" in md
    # 6 discordant pairs, all in favour of the tuned run: exact two-sided p = 2 * 0.5**6
    assert "| tiny | psychcounsel | lora-psydt | professional | 10 | 0.6000 | 0 | 6 | 0.0312 |" in md
    assert "Note:" not in md
    rows = {r["metric"]: r for r in csv.DictReader(csv_path.open())}
    assert float(rows["psychcounsel_bench.primary.accuracy"]["Δ lora-psydt"]) == pytest.approx(0.6)
    assert list(rows["psychcounsel_bench.n_items"].keys())[:5] == ["model", "task", "metric", "base", "lora-psydt"]


def test_compare_notes_different_sample_sets(tmp_path) -> None:
    write_run(tmp_path, "base", 0.5, [True, False, True, False])
    write_run(tmp_path, "lora-psydt", 0.5, [True, False], n_items=2)
    md = compare(tmp_path)[0].read_text()
    assert "runs differ in `psychcounsel_bench.n_items` (2, 4)" in md
    assert "| lora-psydt | professional | 2 |" in md  # paired on the common items only


def test_compare_without_runs(tmp_path) -> None:
    with pytest.raises(EvalError, match="no evaluated runs"):
        compare(tmp_path)
