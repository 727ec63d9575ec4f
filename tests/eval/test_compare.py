"""`compare` on hand-written evaluation folders: one table per model and task, Δ against the right base,
paired McNemar from each plugin's item records, runs selected by name, sample-set notes."""

from __future__ import annotations

import csv
import json

import pytest

from psyfactory.compare import compare
from psyfactory.core.errors import EvalError

FP = {"data_sha256": {"bench.json": "aaa"}, "options": {"psychcounsel_bench": {"scoring": "loglik"}},
      "max_new_tokens": 50}


def write_eval(root, run, variant, acc, items, *, kind=None, n_items=None, fingerprint=FP, task="psychcounsel"):
    d = root / run / "eval" / variant
    d.mkdir(parents=True)
    metrics = {"run": run, "model": "tiny", "task": task, "variant": variant,
               "kind": kind or ("base" if variant.endswith("base") else "tuned"), "fingerprint": fingerprint,
               "plugins": {"psychcounsel_bench": {"n_items": n_items or len(items),
                                                  "primary": {"accuracy": acc, "unparsed": 0},
                                                  "formats": {"professional": {"accuracy": acc}}}}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "psychcounsel_bench_items.jsonl").write_text("".join(
        json.dumps({"id": str(i), "format": "professional", "correct": c}) + "\n" for i, c in enumerate(items)))


def test_compare_side_by_side_with_mcnemar(tmp_path) -> None:
    write_eval(tmp_path, "tiny/psydt/lora", "psychcounsel-base", 0.4, [False] * 6 + [True] * 4)
    write_eval(tmp_path, "tiny/psydt/lora", "psychcounsel-tuned", 1.0, [True] * 10)
    md_path, csv_path = compare(tmp_path)
    md = md_path.read_text()
    assert "## tiny · psychcounsel" in md
    assert "| tiny/psydt/lora | psychcounsel-tuned | 10 | 1.0000 (+0.6000) |" in md
    # 6 discordant pairs, all in favour of the tuned run: exact two-sided p = 2 * 0.5**6
    assert ("| tiny | psychcounsel | tiny/psydt/lora | psychcounsel-tuned | tiny/psydt/lora · psychcounsel-base "
            "| psychcounsel_bench | professional | 10 | 0.6000 | 0 | 6 | 0.0312 |") in md
    assert "Note:" not in md
    rows = {(r["variant"], r["metric"]): r for r in csv.DictReader(csv_path.open())}
    row = rows[("psychcounsel-tuned", "psychcounsel_bench.primary.accuracy")]
    assert float(row["delta"]) == pytest.approx(0.6) and row["base_variant"] == "psychcounsel-base"


def test_two_named_runs_and_a_base_from_another_run(tmp_path) -> None:
    write_eval(tmp_path, "tiny/psychcounsel/lora", "base", 0.5, [True, False, True, False])
    write_eval(tmp_path, "lr-1e-4", "psychcounsel-tuned", 0.75, [True, True, True, False])
    write_eval(tmp_path, "lr-5e-5", "psychcounsel-tuned", 0.25, [False, False, True, False])
    write_eval(tmp_path, "lr-5e-5", "psychcounsel-tuned-other", 1.0, [True, True],
               fingerprint={**FP, "data_sha256": {"other.json": "bbb"}})
    md = compare(tmp_path)[0].read_text()
    assert "| lr-1e-4 | psychcounsel-tuned (vs tiny/psychcounsel/lora · base*) | 4 | 0.7500 (+0.2500) |" in md
    assert "| lr-5e-5 | psychcounsel-tuned (vs tiny/psychcounsel/lora · base*) | 4 | 0.2500 (-0.2500) |" in md
    assert "| lr-5e-5 | psychcounsel-tuned-other | 2 | 1.0000 |" in md  # other data: no base to compare with
    only = compare(tmp_path, ["lr-5e-5"])[0].read_text()
    assert "lr-1e-4" not in only and "| lr-5e-5 | psychcounsel-tuned |" in only
    with pytest.raises(EvalError, match="no evaluations of run.s. nope"):
        compare(tmp_path, ["nope"])


def test_compare_notes_different_sample_sets(tmp_path) -> None:
    write_eval(tmp_path, "r", "base", 0.5, [True, False, True, False])
    write_eval(tmp_path, "r", "tuned", 0.5, [True, False], n_items=2)
    md = compare(tmp_path)[0].read_text()
    assert "evaluations differ in `psychcounsel_bench.n_items` (2, 4)" in md
    assert "| tiny | psychcounsel | r | tuned | r · base | psychcounsel_bench | professional | 2 |" in md


def test_compare_without_runs(tmp_path) -> None:
    with pytest.raises(EvalError, match="no evaluated runs"):
        compare(tmp_path)
