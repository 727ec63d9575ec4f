"""`make review`: base and tuned answers of a run's evaluation side by side, judged by people.

The page (psyfactory.reviewpage) reads two eval variants of the same items (`runs/<run>/eval/tuned/` and
`eval/base/` by default: their `predictions.jsonl`, the plugins' `<plugin>_items.jsonl` and the crisis
safety net's records) and saves each reviewer's judgement of an item (preference base / tuned / tie,
a safety flag per answer, a note) into a human-eval variant of the run:

    runs/<run>/eval/human-review/
      judgements.jsonl   the latest judgement per reviewer and item (rewritten atomically on every save)
      history.jsonl      every save, appended (who changed what, when)
      metrics.json       kind "human": the two variants reviewed, and the summary `make compare` shows
      report.md          the same summary as text

A judgement records the sha256 of what was judged (prompt, reference, both answers); when a variant is
evaluated again and an item's answers change, its judgements are stale: shown as such, never counted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psyfactory.core import files
from psyfactory.core.errors import EvalError
from psyfactory.runs import check_name

PREFERENCES = ("base", "tuned", "tie")
REVIEW_KIND = "human"  # metrics.json `kind` of a review variant (compare keeps it out of the metric tables)
MAX_NOTE = 4000
MAX_REVIEWER = 64
_SKIP_SCORE_KEYS = {"id", "prediction", "reference", "net", "raw", "prompt"}


@dataclass(frozen=True)
class Variant:
    """One evaluation of a run: `runs/<run>/eval/<variant>/`."""

    run: str
    name: str
    dir: Path
    metrics: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.run} · {self.name}"

    def record(self) -> dict[str, Any]:
        fp = self.metrics.get("fingerprint") or {}
        return {"run": self.run, "variant": self.name, "kind": self.metrics.get("kind"),
                "model": fp.get("model") or self.metrics.get("base_model"),
                "adapter_sha256": fp.get("adapter_sha256"), "created": self.metrics.get("created")}


def load_variant(run_name: str, run_dir: Path, variant: str) -> Variant:
    """An eval variant that holds generated answers; a missing one is one EvalError naming what exists."""
    d = run_dir / "eval" / check_name(variant)
    if "/" in variant:
        raise EvalError(f"VARIANT={variant!r}: a variant is one folder name under {run_dir / 'eval'}")
    metrics_file = d / "metrics.json"
    if not metrics_file.is_file():
        have = sorted(p.parent.name for p in (run_dir / "eval").glob("*/metrics.json")
                      if not p.parent.name.startswith("."))
        where = f"variants there: {', '.join(have)}" if have else "it has no evaluation yet"
        raise EvalError(f"run {run_name} has no eval variant {variant!r} ({where}); run `make eval RUN={run_name}` "
                        f"(BASE=1 for the base) first, or name one with VARIANT= / BASE_VARIANT=")
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalError(f"{metrics_file}: line {e.lineno}: invalid JSON: {e.msg}") from None
    if metrics.get("kind") == REVIEW_KIND:
        raise EvalError(f"{d} is a human review, not an evaluation with answers: name an eval variant")
    if not (d / "predictions.jsonl").is_file():
        raise EvalError(f"{d} has no predictions.jsonl: its plugins scored without generating answers (a multiple-"
                        "choice benchmark); the review page shows generated answers")
    return Variant(run_name, d.name, d, metrics)


def default_base_variant(tuned: str) -> str:
    """The base variant that goes with a tuned one: `tuned` -> `base`, `psychcounsel-tuned` -> `psychcounsel-base`."""
    return tuned.replace("tuned", "base", 1) if "tuned" in tuned else "base"


def default_review_variant(tuned: str, same_run: bool, base: str) -> str:
    """`human-review` for the run's own tuned vs base; otherwise named after the tuned variant."""
    if tuned == "tuned" and same_run and base == "base":
        return "human-review"
    return f"human-review-{tuned}"


# ---------------------------------------------------------------------------- items


def answers_sha256(prompt: Any, reference: Any, base: str, tuned: str) -> str:
    """What a judgement is about: a change of any of it makes the judgement stale."""
    blob = json.dumps([prompt, reference, base, tuned], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _predictions(v: Variant) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rec in files.read_jsonl(v.dir / "predictions.jsonl"):
        item_id = str(rec.get("id"))
        if item_id in out:
            raise EvalError(f"{v.dir / 'predictions.jsonl'}: item id {item_id!r} appears twice; judgements are kept "
                            "by item id (give the eval records unique `id`s)")
        out[item_id] = rec
    return out


def _scalar(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, bool | int) or v is None:
        return v
    if isinstance(v, str):
        return v if len(v) <= 60 else v[:57] + "..."
    if isinstance(v, list) and all(isinstance(x, str | int | float) for x in v):
        return _scalar(", ".join(map(str, v))) if v else None
    return ...  # not shown


def item_scores(record: dict[str, Any]) -> dict[str, Any]:
    """The scalar fields of a plugin's item record, nested dicts one level deep (`correct.risk_flag`)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if k in _SKIP_SCORE_KEYS:
            continue
        pairs = v.items() if isinstance(v, dict) else [(None, v)]
        for sub, x in pairs:
            s = _scalar(x)
            if s is not ... and s is not None:
                out[f"{k}.{sub}" if sub is not None else k] = s
    return out


def _plugin_items(v: Variant) -> dict[str, dict[str, dict[str, Any]]]:
    """{plugin: {item id: record}} from the variant's `<plugin>_items.jsonl` files."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in sorted(v.metrics.get("plugins") or {}):
        path = v.dir / f"{name}_items.jsonl"
        if path.is_file():
            out[name] = {str(r.get("id")): r for r in files.read_jsonl(path)}
    return out


def _lexicon_path(*variants: Variant) -> str | None:
    """The crisis lexicon the evaluation's net used (json_labels records it), else None (the default)."""
    for v in variants:
        for m in (v.metrics.get("plugins") or {}).values():
            lex = (m.get("safety_net") or {}).get("lexicon") if isinstance(m, dict) else None
            if lex:
                return str(lex)
    return None


def _crisis_flags(prompt: list[dict[str, str]], nets: dict[str, dict[str, Any]], lexicon: Any) -> list[dict[str, Any]]:
    """Crisis language in the item's input: the net's own record when the evaluation applied one (it scanned
    exactly the text under assessment), else the crisis lexicon on the prompt's user turns."""
    rec = next((r for r in nets.values() if r), None)
    if rec is not None:
        flags = [{"class": rec["class"], "phrase": rec["phrase"], "status": "crisis"}] if rec.get("class") else []
        for status, key in (("report", "reports"), ("negated", "negated"), ("excluded", "excluded")):
            flags += [{"class": h.get("class"), "phrase": h.get("phrase"), "status": status, "why": h.get("why", "")}
                      for h in rec.get(key) or []]
        return flags
    from psyfactory.core.safety import net_text

    return [{"class": h.cls, "phrase": h.phrase, "status": h.status, "why": h.why}
            for h in lexicon.scan(net_text(prompt))]


@dataclass
class ReviewSet:
    """The items of a tuned variant and its base, joined by id, ready for the page."""

    tuned: Variant
    base: Variant
    items: list[dict[str, Any]]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {it["id"]: i for i, it in enumerate(self.items)}

    @property
    def task(self) -> str:
        return str(self.tuned.metrics.get("task"))

    def current(self) -> dict[str, str]:
        return {it["id"]: it["sha256"] for it in self.items}


def load_set(tuned: Variant, base: Variant) -> ReviewSet:
    """Join the two variants item by item; they must hold the same items with the same prompts."""
    from psyfactory.core.safety import DEFAULT_LEXICON, load_lexicon

    t_task, b_task = tuned.metrics.get("task"), base.metrics.get("task")
    if t_task != b_task:
        raise EvalError(f"{tuned.label} was evaluated on task {t_task}, {base.label} on {b_task}: review two "
                        "evaluations of the same task")
    tp, bp = _predictions(tuned), _predictions(base)
    only_t, only_b = [i for i in tp if i not in bp], [i for i in bp if i not in tp]
    if only_t or only_b:
        eg = (only_t or only_b)[0]
        raise EvalError(f"{tuned.label} and {base.label} hold different items ({len(only_t)} only in the tuned, "
                        f"{len(only_b)} only in the base one, e.g. id {eg!r}): evaluate both on the same data with "
                        "the same --limit")
    for i, t in tp.items():
        b = bp[i]
        if t.get("prompt") != b.get("prompt") or t.get("reference") != b.get("reference"):
            raise EvalError(f"{tuned.label} and {base.label} differ in the prompt or reference of item {i!r}: they "
                            "were evaluated on different data; evaluate both again")
    if not tp:
        raise EvalError(f"{tuned.dir / 'predictions.jsonl'} holds no items")
    t_items, b_items = _plugin_items(tuned), _plugin_items(base)
    lexicon = load_lexicon(_lexicon_path(tuned, base) or DEFAULT_LEXICON)
    items = []
    for n, (i, t) in enumerate(tp.items()):
        b = bp[i]
        nets = {side: next((rec[i]["net"] for rec in src.values() if isinstance(rec.get(i, {}).get("net"), dict)), {})
                for side, src in (("base", b_items), ("tuned", t_items))}
        answers = {side: {"text": str(r.get("prediction") or ""), "raw": str(r.get("raw") or ""),
                          "scores": {p: item_scores(rec[i]) for p, rec in src.items() if i in rec},
                          "net": nets[side] or None}
                   for side, r, src in (("base", b, b_items), ("tuned", t, t_items))}
        for a in answers.values():
            if a["raw"] == a["text"]:
                a["raw"] = ""  # shown only when it differs (a stripped <think> block)
        items.append({"n": n, "id": i, "prompt": t.get("prompt"), "reference": t.get("reference"), **answers,
                      "crisis": _crisis_flags(t.get("prompt") or [], nets, lexicon),
                      "sha256": answers_sha256(t.get("prompt"), t.get("reference"), answers["base"]["text"],
                                               answers["tuned"]["text"])})
    return ReviewSet(tuned, base, items)


# ---------------------------------------------------------------------------- judgements


def check_reviewer(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise EvalError("the reviewer's name is empty: type it at the top of the page (or REVIEWER=<name>)")
    name = " ".join(name.split())
    if len(name) > MAX_REVIEWER or any(ord(c) < 32 for c in name):
        raise EvalError(f"reviewer name: at most {MAX_REVIEWER} printable characters")
    return name


def check_judgement(body: Any, ids: dict[str, int]) -> tuple[str, str, str | None, dict[str, bool], str]:
    """(reviewer, item id, preference, safety flags, note) from a posted judgement, or an EvalError."""
    if not isinstance(body, dict):
        raise EvalError("a judgement is a JSON object")
    reviewer = check_reviewer(body.get("reviewer"))
    item_id = body.get("id")
    if not isinstance(item_id, str) or item_id not in ids:
        raise EvalError(f"unknown item id {item_id!r}")
    pref = body.get("preference")
    if pref is not None and pref not in PREFERENCES:
        raise EvalError(f"preference {pref!r}: one of {', '.join(PREFERENCES)} (or null)")
    safety = body.get("safety") or {}
    if not isinstance(safety, dict) or set(safety) - {"base", "tuned"} or \
            not all(isinstance(v, bool) for v in safety.values()):
        raise EvalError("safety: {\"base\": true|false, \"tuned\": true|false}")
    note = body.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise EvalError(f"note: text of at most {MAX_NOTE} characters")
    return reviewer, item_id, pref, {"base": safety.get("base", False), "tuned": safety.get("tuned", False)}, note


class Store:
    """The judgements of one review variant; every save rewrites judgements.jsonl and metrics.json atomically
    and appends to history.jsonl. One process holds a review folder at a time (ReviewServer takes its lock);
    the threads of that process are serialised here."""

    def __init__(self, out_dir: Path, rs: ReviewSet, *, blind: bool = False) -> None:
        self.dir, self.rs, self.blind = out_dir, rs, blind
        self.path = out_dir / "judgements.jsonl"
        self._lock = threading.Lock()
        self.last_summary: dict[str, Any] = {}
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path.is_file():
            for rec in files.read_jsonl(self.path):
                self.records[(rec["reviewer"], rec["id"])] = rec

    def check_pair(self) -> None:
        """A review folder belongs to one pair of variants: another pair is refused."""
        m_file = self.dir / "metrics.json"
        if not m_file.is_file():
            return
        try:
            old = json.loads(m_file.read_text(encoding="utf-8")).get("review") or {}
        except json.JSONDecodeError:
            old = {}
        pair = ((old.get("tuned") or {}).get("run"), (old.get("tuned") or {}).get("variant"),
                (old.get("base") or {}).get("run"), (old.get("base") or {}).get("variant"))
        want = (self.rs.tuned.run, self.rs.tuned.name, self.rs.base.run, self.rs.base.name)
        if pair != want:
            raise EvalError(f"{self.dir} holds the review of {pair[0]} · {pair[1]} vs {pair[2]} · {pair[3]}, not of "
                            f"{want[0]} · {want[1]} vs {want[2]} · {want[3]}: name another with REVIEW_VARIANT=<name>")

    def of(self, reviewer: str) -> dict[str, dict[str, Any]]:
        """A reviewer's judgements by item id, each marked `stale` when the answers changed since."""
        current = self.rs.current()
        return {i: {**rec, "stale": current.get(i) != rec.get("answers_sha256")}
                for (who, i), rec in self.records.items() if who == reviewer and i in current}

    def save(self, body: Any) -> dict[str, Any]:
        reviewer, item_id, pref, safety, note = check_judgement(body, self.rs.index)
        item = self.rs.items[self.rs.index[item_id]]
        rec = {"id": item_id, "reviewer": reviewer, "preference": pref, "safety": safety, "note": note.strip(),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "answers_sha256": item["sha256"], "blind": self.blind}
        with self._lock:
            self.records[(reviewer, item_id)] = rec
            order = self.rs.index
            files.atomic_write_jsonl(self.path, sorted(self.records.values(),
                                                       key=lambda r: (r["reviewer"], order.get(r["id"], 1 << 30))))
            line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
            fd = os.open(self.dir / "history.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line)  # one write of one line: appends never interleave
            finally:
                os.close(fd)
            self.write_summary()
        return {**rec, "stale": False}

    def summary(self) -> dict[str, Any]:
        return summarize(list(self.records.values()), self.rs.current())

    def write_summary(self) -> dict[str, Any]:
        s = self.last_summary = self.summary()
        rs = self.rs
        metrics = {"run": rs.tuned.run, "model": rs.tuned.metrics.get("model"), "task": rs.task,
                   "variant": self.dir.name, "kind": REVIEW_KIND,
                   "review": {"tuned": rs.tuned.record(), "base": rs.base.record(), "n_items": len(rs.items),
                              "blind": self.blind},
                   "human": s, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        files.atomic_write_json(self.dir / "metrics.json", metrics)
        files.atomic_write_text(self.dir / "report.md", report(metrics))
        return s


def summarize(judgements: list[dict[str, Any]], current: dict[str, str] | None = None) -> dict[str, Any]:
    """Preference counts, the tuned model's win rate over decisive judgements (ties left out) with a 95% Wilson
    interval and an exact two-sided sign test, safety flags per answer, per reviewer, and the agreement of
    reviewers on the items they both judged. `current`: item id -> sha256 of its answers now (judgements of
    other answers are stale and not counted)."""
    from scipy.stats import binomtest

    from psyfactory.plugins.base import wilson_ci

    valid = [j for j in judgements if current is None or current.get(j.get("id")) == j.get("answers_sha256")]

    def counts(js: list[dict[str, Any]]) -> dict[str, Any]:
        prefs = Counter(j.get("preference") for j in js if j.get("preference") in PREFERENCES)
        t, b = prefs["tuned"], prefs["base"]
        decisive = t + b
        lo, hi = wilson_ci(t, decisive)
        return {"judged": sum(prefs.values()), "tuned": t, "base": b, "tie": prefs["tie"],
                "win_rate": t / decisive if decisive else None, "win_rate_ci95": [lo, hi] if decisive else None,
                "sign_test_p": float(binomtest(t, decisive, 0.5).pvalue) if decisive else None,
                "safety_flags": {s: sum(bool((j.get("safety") or {}).get(s)) for j in js) for s in ("base", "tuned")},
                "notes": sum(bool(j.get("note")) for j in js)}

    reviewers = sorted({j["reviewer"] for j in valid})
    by = {r: {j["id"]: j.get("preference") for j in valid if j["reviewer"] == r and j.get("preference")}
          for r in reviewers}
    shared = same = 0
    for a, b in itertools.combinations(reviewers, 2):
        both = set(by[a]) & set(by[b])
        shared += len(both)
        same += sum(by[a][i] == by[b][i] for i in both)
    items = {j["id"] for j in valid if j.get("preference") in PREFERENCES}
    return {**counts(valid), "items_judged": len(items), "judgements": len(valid),
            "stale": len(judgements) - len(valid),
            "reviewers": {r: counts([j for j in valid if j["reviewer"] == r]) for r in reviewers},
            "agreement": {"pairs": shared, "same": same, "rate": same / shared if shared else None}}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def win_cell(s: dict[str, Any]) -> str:
    ci = s.get("win_rate_ci95")
    return "-" if s.get("win_rate") is None else f"{s['win_rate']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def report(metrics: dict[str, Any]) -> str:
    s, r = metrics["human"], metrics["review"]
    lines = [f"# Human review: {metrics['run']} · {metrics['task']} · {metrics['variant']}", "",
             f"- tuned: {r['tuned']['run']} · {r['tuned']['variant']}; base: {r['base']['run']} · {r['base']['variant']}",
             f"- {s['items_judged']} of {r['n_items']} items judged with a preference ({s['judged']} preferences, "
             f"{s['judgements']} judgements"
             + (f", {s['stale']} stale: their answers changed since" if s["stale"] else "") + ")"
             + (", blind (sides shuffled, names hidden)" if r.get("blind") else ""),
             f"- preference: tuned {s['tuned']}, base {s['base']}, tie {s['tie']}",
             f"- tuned win rate (ties left out) {win_cell(s)} (95% Wilson), exact sign test p {_pct(s['sign_test_p'])}",
             f"- safety flags: base answers {s['safety_flags']['base']}, tuned answers {s['safety_flags']['tuned']}"]
    if len(s["reviewers"]) > 1:
        ag = s["agreement"]
        lines.append(f"- reviewers agree on {ag['same']} of {ag['pairs']} shared preferences ({_pct(ag['rate'])})")
        lines += ["", "| reviewer | judged | tuned | base | tie | win rate [95% CI] | safety base | safety tuned |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, c in s["reviewers"].items():
            lines.append(f"| {name} | {c['judged']} | {c['tuned']} | {c['base']} | {c['tie']} | {win_cell(c)} | "
                         f"{c['safety_flags']['base']} | {c['safety_flags']['tuned']} |")
    return "\n".join(lines) + "\n"


def read_review(review_dir: Path, runs_root: Path) -> dict[str, Any] | None:
    """A review variant's metrics with its summary recomputed from judgements.jsonl against the reviewed
    variants' answers as they are now (for `make compare`); None when the folder is not a review."""
    try:
        m = json.loads((review_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if m.get("kind") != REVIEW_KIND:
        return None
    path = review_dir / "judgements.jsonl"
    judgements = files.read_jsonl(path) if path.is_file() else []
    r = m.get("review") or {}
    try:
        t, b = (load_variant(r[s]["run"], runs_root / r[s]["run"], r[s]["variant"]) for s in ("tuned", "base"))
        rs = load_set(t, b)
        m["review"]["n_items"] = len(rs.items)
        m["human"] = summarize(judgements, rs.current())
    except (EvalError, KeyError, TypeError):
        m["human"] = summarize(judgements, {})  # the reviewed variants are gone or changed: every judgement is stale
        m["missing_variants"] = True
    return m
