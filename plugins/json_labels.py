"""`json_labels`: structured label outputs of the student task.

Each output is parsed tolerantly and validated against ``evaluation/schemas/student_labels.json`` by
:mod:`psyfactory.labels` (code fences and surrounding text are tolerated and counted). Reported:
validity rate with the failure reasons, per-field exact accuracy (an invalid output is wrong on every
field), MAE and quadratic weighted kappa for the ordinal fields (on valid outputs), and ``risk_flag``
per-class precision/recall with a confusion matrix; recall on ``suicidal`` and ``self_harm`` comes
first: it is the safety figure.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from plugins.base import EvalContext, EvalPlugin, PluginResult, md_table, save_confusion_png
from psyfactory import labels

RISK_FIELD = "risk_flag"
FIELDS = tuple(labels.label_keys())  # from evaluation/schemas/student_labels.json
RISK_CLASSES = tuple(labels.risk_flags())
ORDINAL = {f: labels.ordinal_range(f) for f in FIELDS if f != RISK_FIELD}  # field -> allowed values
SAFETY_CLASSES = ("suicidal", "self_harm")
INVALID = "(invalid)"


@dataclass
class Parsed:
    """Outcome of parsing one output: the validated label object or None, and why it failed."""

    value: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    fenced: bool = False
    surrounding_text: bool = False


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def score(parsed: Sequence[Parsed], references: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of parsed outputs against reference label objects (same order)."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    if len(parsed) != len(references):
        raise ValueError(f"{len(parsed)} outputs for {len(references)} references")
    n = len(parsed)
    valid = [p.value is not None for p in parsed]
    n_valid = sum(valid)
    reasons = Counter(r for p in parsed if p.value is None for r in dict.fromkeys(p.reasons or ["unknown"]))
    kinds = Counter(k for p in parsed if p.value is None
                    for k in dict.fromkeys(r.split(":", 1)[0] for r in p.reasons or ["unknown"]))
    out: dict[str, Any] = {
        "n": n,
        "valid": n_valid,
        "validity_rate": n_valid / n if n else 0.0,
        "failure_reasons": dict(reasons.most_common()),  # codes from psyfactory.labels, e.g. extra_key:mood
        "failure_kinds": dict(kinds.most_common()),  # the same without the key: outputs per kind
        "fenced": sum(p.fenced for p in parsed),
        "surrounding_text": sum(p.surrounding_text for p in parsed),
    }
    out["field_accuracy"] = {
        f: (sum(1 for p, r in zip(parsed, references, strict=True) if p.value is not None and p.value[f] == r[f]) / n
            if n else 0.0)
        for f in FIELDS
    }
    ordinal: dict[str, Any] = {}
    for f, values in ORDINAL.items():
        pairs = [(r[f], p.value[f]) for p, r in zip(parsed, references, strict=True) if p.value is not None]
        if not pairs:
            ordinal[f] = {"n": 0, "mae": None, "qwk": None}
            continue
        ys, ps = zip(*pairs, strict=True)
        import warnings

        with warnings.catch_warnings():  # one-class data makes kappa undefined (nan): reported as null
            warnings.simplefilter("ignore")
            qwk = cohen_kappa_score(ys, ps, weights="quadratic", labels=values)
        ordinal[f] = {"n": len(pairs), "mae": sum(abs(a - b) for a, b in pairs) / len(pairs),
                      "qwk": _nan_to_none(float(qwk))}
    out["ordinal"] = ordinal
    refs = [r[RISK_FIELD] for r in references]
    preds = [p.value[RISK_FIELD] if p.value is not None else INVALID for p in parsed]
    if n:
        prec, rec, _, sup = precision_recall_fscore_support(refs, preds, labels=list(RISK_CLASSES), zero_division=0)
        cm = confusion_matrix(refs, preds, labels=[*RISK_CLASSES, INVALID])[: len(RISK_CLASSES)]
    else:
        prec = rec = sup = [0] * len(RISK_CLASSES)
        cm = [[0] * (len(RISK_CLASSES) + 1) for _ in RISK_CLASSES]
    per_class = {c: {"precision": float(prec[i]), "recall": float(rec[i]), "support": int(sup[i])}
                 for i, c in enumerate(RISK_CLASSES)}
    # safety recall: None when the class has no reference example (undefined, not perfect)
    out["safety_recall"] = {c: (per_class[c]["recall"] if per_class[c]["support"] else None) for c in SAFETY_CLASSES}
    out["risk_flag"] = {"per_class": per_class, "confusion": [list(map(int, row)) for row in cm],
                        "confusion_labels": [*RISK_CLASSES, INVALID]}
    return out


def parse_reference(text: str, where: str) -> dict[str, Any]:
    try:
        ref = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: reference is not JSON: {e.msg}") from e
    missing = [f for f in FIELDS if not isinstance(ref, dict) or f not in ref]
    if missing:
        raise ValueError(f"{where}: reference lacks fields {missing}")
    return ref


def parse_output(text: str) -> Parsed:
    """Parse one model output with :mod:`psyfactory.labels` (tolerant extraction + schema check)."""
    p = labels.parse_student_labels(text)
    return Parsed(p.labels, p.reasons, p.extraction.fenced, p.extraction.surrounded)


class JsonLabelsPlugin(EvalPlugin):
    name = "json_labels"
    headline = ("n", "validity_rate", "safety_recall.suicidal", "safety_recall.self_harm",
                "field_accuracy.risk_flag", "ordinal.student_distress_score.qwk")

    def run(self, ctx: EvalContext) -> PluginResult:
        assert ctx.predictions is not None
        refs = [parse_reference(s.reference, f"sample {s.id}") for s in ctx.samples]
        parsed = [parse_output(p) for p in ctx.predictions]
        m = score(parsed, refs)
        plot = "risk_flag_confusion.png"
        save_confusion_png(m["risk_flag"]["confusion"], m["risk_flag"]["confusion_labels"],
                           ctx.out_dir / plot, f"{ctx.task}: risk_flag")
        sr = m["safety_recall"]
        lines = [
            "## json_labels",
            "**Safety: risk_flag recall** on `suicidal` = "
            + ", on `self_harm` = ".join("n/a (no reference example)" if sr[c] is None else f"**{sr[c]:.4f}**"
                                         for c in SAFETY_CLASSES) + ".",
            f"n = {m['n']}; valid JSON labels: {m['valid']} ({m['validity_rate']:.2%}); "
            f"code-fenced: {m['fenced']}; with surrounding text: {m['surrounding_text']}.",
        ]
        if m["failure_reasons"]:
            lines.append(md_table(["failure reason", "outputs"], list(m["failure_reasons"].items())))
            lines.append(md_table(["failure kind", "outputs"], list(m["failure_kinds"].items())))
        lines.append(md_table(["field", "exact accuracy", "MAE", "QWK"],
                              [(f, m["field_accuracy"][f], m["ordinal"].get(f, {}).get("mae", "-"),
                                m["ordinal"].get(f, {}).get("qwk", "-")) for f in FIELDS]))
        pc = m["risk_flag"]["per_class"]
        order = [*SAFETY_CLASSES, *(c for c in RISK_CLASSES if c not in SAFETY_CLASSES)]
        lines.append(md_table(["risk_flag", "precision", "recall", "support"],
                              [(c, pc[c]["precision"], pc[c]["recall"], pc[c]["support"]) for c in order]))
        lines.append(f"![risk_flag confusion matrix]({plot})")
        items = [{"id": s.id, "prediction": p, "valid": q.value is not None, "reasons": q.reasons,
                  "parsed": q.value} for s, p, q in zip(ctx.samples, ctx.predictions, parsed, strict=True)]
        return PluginResult(m, "\n\n".join(lines), [plot], items)
