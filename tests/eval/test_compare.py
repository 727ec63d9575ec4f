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


def test_a_sweep_is_mean_and_sd_per_grid_point_with_a_paired_test_by_seed(tmp_path) -> None:
    """Runs recorded as sweep points (their manifests say so): mean ± sd over seeds per grid point, and a
    paired t-test between grid points, paired by seed (scipy's ttest_rel on the per-seed values)."""
    from scipy.stats import ttest_rel

    accs = {"learning_rate=1e-4": [0.50, 0.54, 0.52], "learning_rate=2e-4": [0.60, 0.61, 0.66]}
    for point, values in accs.items():
        for seed, acc in enumerate(values, 1):
            run = f"base/sweep-s/{point}/seed={seed}"
            write_eval(tmp_path, run, "tuned", acc, [True])
            (tmp_path / run / "manifest.json").write_text(json.dumps(
                {"sweep": {"name": "s", "base": "base", "point": point, "seed": seed}}))
    md = compare(tmp_path, ["base/sweep-s"])[0].read_text()
    assert "## Sweep s of base · psychcounsel · tuned: mean ± sd over seeds" in md
    assert "| learning_rate=1e-4 | 3 | 0.5200 ± 0.0200 |" in md and "| learning_rate=2e-4 | 3 | 0.6233 ± 0.0321 |" in md
    p = ttest_rel(accs["learning_rate=2e-4"], accs["learning_rate=1e-4"]).pvalue
    assert (f"| psychcounsel_bench.primary.accuracy | learning_rate=1e-4 | learning_rate=2e-4 | 3 | 0.1033 | "
            f"{p:.4f} |") in md
