"""Benchmark: the crisis net on real posts, per SOS-1K fold held out: the lexicon alone, the learned
detector alone and both (the net), plus false raises on text without crisis language.

Nested cross-validation by the dataset's own five folds: for each fold held out, the detector is
trained on the other four (its threshold chosen on out-of-fold scores within those four, exactly as
`make crisis-detector` does on all five) and the net is applied to the held-out fold's comments and to
the client turns of the held-out fifth of the CPsyCounD dialogues without crisis language (dialogues
go to folds by case number; the detector learns from the other four fifths as negatives). Reported
per fold and pooled, with 95% Wilson intervals:

* recall on high-risk comments (the binary file's high risk);
* raise rate on the lowest-urgency levels 0-2 and on all low-risk comments (false raises);
* recall by level 0-10 (pooled);
* raise rate on CPsyCounD client turns (and whole dialogues) without crisis language; the lexicon
  raises none of them by construction (such dialogues are those where it finds nothing);
* on the hand-written sentences of evaluation/safety/crisis_sentences.yaml (never trained on): what
  each part raises, per kind and language, by the detector trained on all five folds.

    .venv/bin/python benchmarks/crisis_net_bench.py --raw-dir ../shared/datasets
    .venv/bin/python benchmarks/crisis_net_bench.py --raw-dir raw --json benchmarks/results/mine.json

Nothing trained here is saved (the cache of `make crisis-detector` is left alone). `--set C=10` etc.
overrides a field of the detector's spec (psyfactory.core.detector.DetectorSpec) to compare variants.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psyfactory.core.paths import EVALUATION_DIR, REPO_ROOT  # noqa: E402

SENTENCES = EVALUATION_DIR / "safety" / "crisis_sentences.yaml"
PARTS = ("lexicon", "detector", "both")


def wilson(k: int, n: int) -> list[float]:
    from psyfactory.plugins.base import wilson_ci

    return [round(x, 4) for x in wilson_ci(k, n)]


def rate(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "rate": round(k / n, 4) if n else None, "ci95": wilson(k, n)}


def parts(d: Any) -> dict[str, bool]:
    """What each part of the net did to one text."""
    return {"lexicon": d.hit is not None, "detector": bool(d.detector and d.detector.fired),
            "both": d.found is not None}


def override(spec: Any, pairs: list[str]) -> Any:
    for pair in pairs:
        key, _, value = pair.partition("=")
        current = getattr(spec, key)
        spec = replace(spec, **{key: tuple(int(v) for v in value.split(",")) if isinstance(current, tuple)
                                else type(current)(value)})
    return spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw-dir", default=str(REPO_ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--detector", default="sos1k-charngram")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a spec field")
    ap.add_argument("--json", default=None, help="write the figures here (default benchmarks/results/<date>-cpu-crisis-net.json)")
    args = ap.parse_args(argv)

    import yaml

    from psyfactory import crisis
    from psyfactory.core import detector as detmod
    from psyfactory.core.safety import SafetyNet, load_lexicon

    t0 = time.time()
    raw = Path(args.raw_dir).resolve()
    spec = override(detmod.spec_of(args.detector), args.set)
    lex = load_lexicon()
    data = crisis.training_data(raw, args.detector)
    comments, _ = crisis.sos1k_comments(raw)
    dialogues = [(n, turns) for n, turns in crisis.client_turns(raw) if crisis.without_crisis(turns, lex)]
    print(f"SOS-1K: {len(comments)} comments ({sum(c.high for c in comments)} high risk); CPsyCounD: "
          f"{len(dialogues)} dialogues without crisis language; {len(data.units)} training units", flush=True)

    folds: list[dict[str, Any]] = []
    by_level: dict[int, Counter] = {}
    pooled: dict[str, Counter] = {k: Counter() for k in ("high", "low", "low02", "turns", "dialogues")}
    n = Counter()
    for k in sorted({c.fold for c in comments}):
        det = detmod.fit([u for u in data.units if u.fold != k], spec)
        net = SafetyNet(lex, "risk_flag", detector=det, detector_name=spec.name)
        held = [c for c in comments if c.fold == k]
        res = {c: parts(net.decide(None, c.text)) for c in held}
        turns = [(nr, [parts(net.decide(None, t)) for t in ts]) for nr, ts in dialogues if crisis.fold_of_case(nr) == k]
        row: dict[str, Any] = {"fold": k, "threshold": round(det.threshold, 4), "high": sum(c.high for c in held),
                               "low": sum(not c.high for c in held), "levels_0_2": sum(c.level <= 2 for c in held),
                               "cpsycound_turns": sum(len(t) for _, t in turns), "cpsycound_dialogues": len(turns)}
        for p in PARTS:
            hi = sum(res[c][p] for c in held if c.high)
            lo = sum(res[c][p] for c in held if not c.high)
            lo02 = sum(res[c][p] for c in held if c.level <= 2)
            tr = sum(x[p] for _, ts in turns for x in ts)
            dr = sum(any(x[p] for x in ts) for _, ts in turns)
            row[p] = {"recall_high": rate(hi, row["high"]), "raise_low": rate(lo, row["low"]),
                      "raise_levels_0_2": rate(lo02, row["levels_0_2"]),
                      "raise_cpsycound_turns": rate(tr, row["cpsycound_turns"]),
                      "raise_cpsycound_dialogues": rate(dr, row["cpsycound_dialogues"])}
            for key, v in (("high", hi), ("low", lo), ("low02", lo02), ("turns", tr), ("dialogues", dr)):
                pooled[key][p] += v
        for c in held:
            by_level.setdefault(c.level, Counter())
            by_level[c.level]["n"] += 1
            by_level[c.level]["high"] += c.high
            for p in PARTS:
                by_level[c.level][p] += res[c][p]
                by_level[c.level][f"{p}_high"] += res[c][p] and c.high
        n.update({"high": row["high"], "low": row["low"], "low02": row["levels_0_2"],
                  "turns": row["cpsycound_turns"], "dialogues": row["cpsycound_dialogues"]})
        folds.append(row)
        print(f"  fold {k} held out: threshold {det.threshold:.3f}, net recall "
              f"{row['both']['recall_high']['rate']:.3f} ({time.time() - t0:.0f} s)", flush=True)

    total = {p: {"recall_high": rate(pooled["high"][p], n["high"]), "raise_low": rate(pooled["low"][p], n["low"]),
                 "raise_levels_0_2": rate(pooled["low02"][p], n["low02"]),
                 "raise_cpsycound_turns": rate(pooled["turns"][p], n["turns"]),
                 "raise_cpsycound_dialogues": rate(pooled["dialogues"][p], n["dialogues"])} for p in PARTS}
    levels = {lv: {"n": c["n"], "high": c["high"], **{p: rate(c[p], c["n"]) for p in PARTS}}
              for lv, c in sorted(by_level.items())}

    # the hand-written sentences, by the detector trained on all five folds (what `make crisis-detector` ships)
    final = detmod.fit(data.units, spec)
    net = SafetyNet(lex, "risk_flag", detector=final, detector_name=spec.name)
    sentences = yaml.safe_load(SENTENCES.read_text(encoding="utf-8"))["sentences"]
    sent: dict[str, Counter] = {}
    for s in sentences:
        lang = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in s["text"]) else "en"
        key = f"{lang} {s['kind']}{'' if s['truth'] == 'none' else ' (' + s['truth'] + ')'}"
        got = parts(net.decide(None, s["text"]))
        sent.setdefault(key, Counter())["n"] += 1
        for p in PARTS:
            sent[key][p] += got[p]
    sentence_rows = {k: {"n": c["n"], **{p: c[p] for p in PARTS}} for k, c in sorted(sent.items())}

    out = {"detector": spec.name, "spec": {k: v for k, v in spec.__dict__.items()}, "raw_dir": str(raw),
           "data_sha256": data.sha256, "lexicon_sha256": lex.sha256, "training": data.info,
           "final_threshold": final.threshold, "final_cv": final.info["cv"],
           "folds": folds, "pooled": total, "by_level": levels, "sentences": sentence_rows,
           "seconds": round(time.time() - t0, 1), "machine": "cpu"}
    print()
    print(table(folds, total))
    print()
    print("recall / raise rate by level (pooled; levels 0-5 are mostly low risk, 6-10 high):")
    print("| level | comments | high risk | lexicon | detector | both |")
    print("|---|---|---|---|---|---|")
    for lv, r in levels.items():
        print(f"| {lv} | {r['n']} | {r['high']} | " + " | ".join(f"{r[p]['k']}/{r['n']}" for p in PARTS) + " |")
    print()
    print("hand-written sentences (evaluation/safety/crisis_sentences.yaml), raised by each part:")
    print("| set | n | lexicon | detector | both |")
    print("|---|---|---|---|---|")
    for key, r in sentence_rows.items():
        print(f"| {key} | {r['n']} | " + " | ".join(str(r[p]) for p in PARTS) + " |")
    path = Path(args.json) if args.json else REPO_ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-cpu-crisis-net.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\n{time.time() - t0:.0f} s; written {path}")
    return 0


def cell(r: dict[str, Any], ci: bool = False) -> str:
    s = f"{r['k']}/{r['n']} = {r['rate']:.3f}" if r["n"] else "-"
    return s + (f" [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if ci and r["n"] else "")


def table(folds: list[dict[str, Any]], total: dict[str, Any]) -> str:
    head = ("| fold held out | threshold | recall high risk: lexicon | detector | both | raise levels 0-2: lexicon | "
            "detector | both | false raises low risk: lexicon | detector | both | CPsyCounD turns: detector (= both) | "
            "dialogues |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def row(label: str, thr: str, r: dict[str, Any], ci: bool) -> str:
        cols = [cell(r[p]["recall_high"], ci) for p in PARTS] + [cell(r[p]["raise_levels_0_2"], ci) for p in PARTS]
        cols += [cell(r[p]["raise_low"], ci) for p in PARTS]
        cols += [cell(r["both"]["raise_cpsycound_turns"], ci), cell(r["both"]["raise_cpsycound_dialogues"], ci)]
        return f"| {label} | {thr} | " + " | ".join(cols) + " |"

    for f in folds:
        lines.append(row(str(f["fold"]), f"{f['threshold']:.3f}", f, False))
    lines.append(row("all (95% CI)", "", total, True))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
