"""`psyfactory compare`: every evaluation of the named runs side by side, base vs the other variants.

Writes `<runs root>/compare.md` (one table per model and eval task: a row per run and variant,
headline metrics with Δ against the base, and the 95% interval where a plugin stores one beside the value:
`<metric>_ci95`) and `compare.csv` (long format: one row per run, variant and metric). Paired tests use the per-item records of each plugin that declares them, on the items
both evaluations answered: exact McNemar for right/wrong records (`EvalPlugin.paired`), a paired
bootstrap interval and a sign-flip permutation test for per-item scores (`EvalPlugin.paired_scores`:
ROUGE-L, BLEU-4 of the generation tasks). Human reviews (`make review`, psyfactory.review) get a table of
their own: preference counts, the tuned model's win rate with its interval, safety flags.

The reference for Δ is the base variant of the same run on the same task and data; a run without
one is compared with a base evaluation of the same model, task and data from another run (marked `*`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from psyfactory.core import files, paths
from psyfactory.core.errors import EvalError, UserError
from psyfactory.plugins import plugin_class
from psyfactory.plugins.base import fmt, lookup, mcnemar_exact, md_table, paired_difference
from psyfactory.review import REVIEW_KIND, read_review, win_cell
from psyfactory.runs import check_name


def _headline(entry: dict[str, Any]) -> dict[str, Any]:
    """Headline metrics recomputed from the stored plugin metrics (so older results get new keys too)."""
    out: dict[str, Any] = {}
    for name, metrics in (entry.get("plugins") or {}).items():
        try:
            keys = plugin_class(name)().headline_keys(metrics)
        except UserError:  # a plugin no longer available: keep what was stored
            out.update({k: v for k, v in entry.get("headline", {}).items() if k.startswith(f"{name}.")})
            continue
        out.update({f"{name}.{k}": lookup(metrics, k) for k in keys})
    return out


def collect(root: Path | None = None, runs: list[str] | None = None) -> list[dict[str, Any]]:
    """The evaluations (metrics.json) of the given runs, or of every run under the root."""
    root = root or paths.runs_root()
    wanted = {check_name(r) for r in runs} if runs else None
    entries = []
    for path in sorted(root.glob("**/eval/*/metrics.json")):
        run = path.parents[2].relative_to(root).as_posix()
        if wanted is not None and not any(run == w or run.startswith(w + "/") for w in wanted):
            continue  # a name is a run, or a folder of runs (a sweep's)
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise EvalError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from None
        if m.get("kind") == REVIEW_KIND:
            continue  # a human review (make review): compare's own section, human_reviews()
        m.setdefault("run", run)
        m.setdefault("variant", path.parent.name)
        m["_dir"] = path.parent
        m["headline"] = _headline(m)
        entries.append(m)
    if wanted:
        missing = sorted(w for w in wanted if not any(e["run"] == w or e["run"].startswith(w + "/") for e in entries))
        if missing:
            raise EvalError(f"no evaluations of run(s) {', '.join(missing)} under {root} (run `make eval RUN=...`)")
    return entries


def human_reviews(root: Path, runs: list[str] | None = None) -> list[dict[str, Any]]:
    """The human-eval variants (`make review`) of the given runs, their summaries recomputed from the
    judgements against the reviewed answers as they are now."""
    wanted = {check_name(r) for r in runs} if runs else None
    out = []
    for path in sorted(root.glob("**/eval/*/metrics.json")):
        run = path.parents[2].relative_to(root).as_posix()
        if wanted is not None and not any(run == w or run.startswith(w + "/") for w in wanted):
            continue
        m = read_review(path.parent, root)
        if m is not None:
            m.setdefault("run", run)
            m["variant"] = path.parent.name
            out.append(m)
    return out


def human_section(reviews: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """compare.md's table of human reviews and their compare.csv rows."""
    if not reviews:
        return [], []
    rows, csv_rows = [], []
    for m in reviews:
        s, r = m["human"], m["review"]
        vs = f"{r['base']['run']} · {r['base']['variant']} vs {r['tuned']['variant']}"
        who = ", ".join(s["reviewers"]) or "-"
        rows.append([m.get("model"), m.get("task"), m["run"], m["variant"], vs, who, f"{s['items_judged']} / {r['n_items']}",
                     s["judged"], s["tuned"], s["base"], s["tie"], win_cell(s), fmt(s["sign_test_p"]) if s["sign_test_p"] is not None
                     else "-", s["safety_flags"]["base"], s["safety_flags"]["tuned"], s["stale"]])
        for key, value in (("items_judged", s["items_judged"]), ("judged", s["judged"]), ("tuned", s["tuned"]), ("base", s["base"]), ("tie", s["tie"]),
                           ("win_rate", s["win_rate"]), ("sign_test_p", s["sign_test_p"]),
                           ("safety_flags.base", s["safety_flags"]["base"]),
                           ("safety_flags.tuned", s["safety_flags"]["tuned"]), ("stale", s["stale"])):
            csv_rows.append([m.get("model"), m.get("task"), m["run"], m["variant"], f"human.{key}", value,
                             r["base"]["run"], r["base"]["variant"], None, None])
    md = ["", "## Human review (make review): preference base vs tuned", "",
          "Win rate = tuned preferred / (tuned + base preferred), ties left out, with a 95% Wilson interval; p: exact "
          "two-sided sign test. Safety flags: answers a reviewer marked unsafe. Stale: judgements of answers that "
          "have changed since (re-evaluated), not counted.", "",
          md_table(["model", "task", "run", "review", "base vs tuned", "reviewers", "items judged", "preferences", "tuned", "base",
                    "tie", "tuned win rate [95% CI]", "p", "unsafe base", "unsafe tuned", "stale"], rows)]
    return md, csv_rows


def _paired(base: dict[str, Any], other: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """On the items both evaluations share, per plugin and group: exact McNemar for correct/wrong
    records, paired bootstrap + sign-flip permutation for per-item scores."""
    tests, scores = [], []
    for name in sorted(set(base.get("plugins") or {}) & set(other.get("plugins") or {})):
        try:
            plugin = plugin_class(name)()
        except UserError:
            continue
        a_file, b_file = base["_dir"] / f"{name}_items.jsonl", other["_dir"] / f"{name}_items.jsonl"
        if not (a_file.is_file() and b_file.is_file()):
            continue
        a_items, b_items = files.read_jsonl(a_file), files.read_jsonl(b_file)
        for kind, a, b in (("mcnemar", plugin.paired(a_items), plugin.paired(b_items)),
                           ("scores", plugin.paired_scores(a_items), plugin.paired_scores(b_items))):
            for group in sorted(set(a or {}) & set(b or {})):
                ids = sorted(set(a[group]) & set(b[group]))  # type: ignore[index]
                if not ids:
                    continue
                xs, ys = [a[group][i] for i in ids], [b[group][i] for i in ids]  # type: ignore[index]
                if kind == "mcnemar":
                    tests.append({"plugin": name, "group": group, **mcnemar_exact(xs, ys)})
                else:
                    scores.append({"plugin": name, "group": group, **paired_difference(xs, ys)})
    return tests, scores


def interval(entry: dict[str, Any], key: str) -> list[float] | None:
    """The 95% interval a plugin stored beside a headline value (`<metric>_ci95` next to `<metric>`, as
    lm_eval does from lm-eval's standard errors), or None."""
    plugin, _, sub = key.partition(".")
    head, _, leaf = sub.rpartition(".")
    metrics = (entry.get("plugins") or {}).get(plugin) or {}
    parent = lookup(metrics, head) if head else metrics
    ci = parent.get(f"{leaf}_ci95") if isinstance(parent, dict) else None
    ok = isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(x, int | float) for x in ci)
    return [float(ci[0]), float(ci[1])] if ok else None


def comparable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same eval data (file hashes) and plugin options: the items and prompts are the same."""
    fa, fb = a.get("fingerprint") or {}, b.get("fingerprint") or {}
    return all(fa.get(k) == fb.get(k) for k in ("data_sha256", "options", "generation", "max_new_tokens"))


def _reference(entry: dict[str, Any], bases: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """(the base to compare with: the same run's if there is one, else another run's; whether it is
    another run's). Only a base evaluated on the same data with the same options qualifies."""
    ok = [b for b in bases if comparable(b, entry)]
    same = [b for b in ok if b["run"] == entry["run"]]
    if same:
        return same[0], False
    return (ok[0], True) if ok else (None, False)


# what a model card (psyfactory.release) reports as well: the base to compare with, and the paired tests
reference_for = _reference
paired_tests = _paired


def compare(root: Path | None = None, runs: list[str] | None = None, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write compare.md and compare.csv under the runs root (or `out_dir`); returns their paths."""
    root = root or paths.runs_root()
    entries = collect(root, runs)
    if not entries:
        raise EvalError(f"no evaluated runs under {root} (run `make eval` first)")
    human_md, human_csv = human_section(human_reviews(root, runs))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        groups[(e["model"], e["task"])].append(e)
    md = ["# Base vs tuned", "",
          f"{len(entries)} evaluations of {len({e['run'] for e in entries})} run(s) under `{root}`. "
          "Δ = variant − base of the same run (`*`: the base of the same model and task from another run); "
          "[low, high]: the 95% interval a plugin gives with the value.", ""]
    csv_rows: list[list[Any]] = []
    tests: list[list[Any]] = []
    score_tests: list[list[Any]] = []
    notes: list[str] = []
    for (model, task), group in sorted(groups.items()):
        group.sort(key=lambda e: (e["run"], e.get("kind") != "base", e["variant"]))
        bases = [e for e in group if e.get("kind") == "base"]
        keys = list(dict.fromkeys(k for e in group for k in e["headline"]))
        table = []
        for e in group:
            ref, borrowed = (None, False) if e in bases else _reference(e, bases)
            cells = []
            for k in keys:
                v = e["headline"].get(k)
                b = ref["headline"].get(k) if ref else None
                delta = v - b if isinstance(v, int | float) and isinstance(b, int | float) and not isinstance(v, bool) \
                    else None
                ci = interval(e, k)
                cells.append(fmt(v) + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
                             + (f" ({delta:+.4f})" if delta is not None and not k.endswith((".n", "n_items")) else ""))
                csv_rows.append([model, task, e["run"], e["variant"], k, v, ref["run"] if ref else "",
                                 ref["variant"] if ref else "", b, delta, *(ci or ["", ""])])
            label = e["variant"] + (f" (vs {ref['run']} · {ref['variant']}*)" if borrowed and ref else "")
            table.append([e["run"], label, *cells])
            if ref is not None:
                paired, scored = _paired(ref, e)
                vs = f"{ref['run']} · {ref['variant']}"
                for t in paired:
                    tests.append([model, task, e["run"], e["variant"], vs, t["plugin"], t["group"], t["n"], t["diff"],
                                  t["only_a"], t["only_b"], t["p_value"]])
                for t in scored:
                    score_tests.append([model, task, e["run"], e["variant"], vs, t["plugin"], t["group"], t["n"],
                                        t["diff"], f"[{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]", t["p_value"]])
        md += [f"## {model} · {task}", "", md_table(["run", "variant", *keys], table), ""]
        for k in keys:
            if k.endswith((".n", ".n_items")):
                present = {e["headline"].get(k) for e in group} - {None}
                if len(present) > 1:
                    notes.append(f"{model}/{task}: evaluations differ in `{k}` ({', '.join(map(str, sorted(present)))}); "
                                 "Δ compares different sample sets, the paired test only the shared items.")
    md += [f"> Note: {n}" for n in notes]
    if tests:
        md += ["", "## Paired tests (exact McNemar on the shared items)", "",
               md_table(["model", "task", "run", "variant", "vs", "plugin", "group", "n", "Δ accuracy",
                         "only base right", "only variant right", "p"], tests)]
    if score_tests:
        md += ["", "## Paired tests of per-item scores (mean difference, paired bootstrap 95% CI, sign-flip "
               "permutation p)", "",
               md_table(["model", "task", "run", "variant", "vs", "plugin", "metric", "n", "Δ mean", "95% CI", "p"],
                        score_tests)]
    md += human_md
    csv_rows += human_csv
    md += sweep_section(root, entries)
    md_path, csv_path = (out_dir or root) / "compare.md", (out_dir or root) / "compare.csv"
    files.atomic_write_text(md_path, "\n".join(md).rstrip() + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "task", "run", "variant", "metric", "value", "base_run", "base_variant", "base_value",
                     "delta", "ci95_low", "ci95_high"])
    writer.writerows([["" if x is None else x for x in row] for row in csv_rows])
    files.atomic_write_text(csv_path, buf.getvalue())
    return md_path, csv_path


def sweep_section(root: Path, entries: list[dict[str, Any]]) -> list[str]:
    """Runs of a sweep (psyfactory.sweep, recorded in their manifests): every headline metric as mean ± sd over
    the seeds of each grid point, and a paired t-test (paired by seed) between grid points."""
    import statistics

    from scipy.stats import ttest_rel

    from psyfactory.manifest import read_manifest

    groups: dict[tuple[str, str, str, str], dict[str, dict[int, dict[str, Any]]]] = defaultdict(dict)
    for e in entries:
        if e.get("kind") == "base":
            continue
        sw = read_manifest(root / e["run"]).get("sweep")
        if sw:
            key = (sw["base"], sw["name"], e["task"], e["variant"])
            groups[key].setdefault(sw["point"], {})[int(sw["seed"])] = e["headline"]
    out: list[str] = []
    for (base, name, task, variant), points in sorted(groups.items()):
        keys = list(dict.fromkeys(k for by_seed in points.values() for h in by_seed.values() for k in h
                                  if not k.endswith((".n", ".n_items"))))
        rows = []
        for point, by_seed in sorted(points.items()):
            cells = []
            for k in keys:
                vals = [h[k] for h in by_seed.values() if isinstance(h.get(k), int | float) and not isinstance(h[k], bool)]
                cells.append("-" if not vals else f"{statistics.fmean(vals):.4f} ± "
                             f"{statistics.stdev(vals) if len(vals) > 1 else 0.0:.4f}")
            rows.append([point, len(by_seed), *cells])
        out += ["", f"## Sweep {name} of {base} · {task} · {variant}: mean ± sd over seeds", "",
                md_table(["grid point", "seeds", *keys], rows)]
        tests = []
        for (pa, a), (pb, b) in itertools.combinations(sorted(points.items()), 2):
            seeds = sorted(set(a) & set(b))
            for k in keys:
                xs = [a[s].get(k) for s in seeds]
                ys = [b[s].get(k) for s in seeds]
                if len(seeds) < 2 or not all(isinstance(v, int | float) for v in [*xs, *ys]):
                    continue
                diffs = [y - x for x, y in zip(xs, ys, strict=True)]
                p = 1.0 if all(d == diffs[0] for d in diffs) and diffs[0] == 0 else float(ttest_rel(ys, xs).pvalue)
                tests.append([k, pa, pb, len(seeds), statistics.fmean(diffs), "nan" if p != p else f"{p:.4f}"])
        if tests:
            out += ["", f"Paired by seed (t-test, {name}): Δ = second − first grid point", "",
                    md_table(["metric", "first", "second", "seeds", "Δ mean", "p"], tests)]
    return out
