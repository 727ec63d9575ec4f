"""`json_labels`: structured label outputs of a label task (the student task's four labels, or any
task whose `psy.label_schema` names a flat JSON Schema of enum fields).

Each output is parsed tolerantly and validated against the task's schema by
:mod:`psyfactory.core.labels` (code fences and surrounding text are tolerated and counted). Reported:
validity rate with the failure reasons, per-field exact accuracy (an invalid output is wrong on every
field), MAE and quadratic weighted kappa for the ordinal (integer) fields on valid outputs, and for
each categorical (string) field per-class precision/recall with a confusion matrix. With
``safety_field`` / ``safety_classes`` (the student task: ``risk_flag``, ``suicidal`` and ``self_harm``)
their recall comes first: it is the safety figure.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from plugins.base import EvalContext, EvalPlugin, PluginOptions, PluginResult, md_table, save_confusion_png
from psyfactory.core.errors import EvalError
from psyfactory.core.labels import LabelSchema, student_schema

INVALID = "(invalid)"


class Options(PluginOptions):
    safety_field: str | None = None  # a categorical field whose recall is the safety figure (risk_flag)
    safety_classes: list[str] = []  # its classes that must be found (suicidal, self_harm)


@dataclass
class Parsed:
    """Outcome of parsing one output: the validated label object or None, and why it failed."""

    value: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    fenced: bool = False
    surrounding_text: bool = False


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def score(parsed: Sequence[Parsed], references: Sequence[dict[str, Any]], schema: LabelSchema | None = None,
          safety_field: str | None = None, safety_classes: Sequence[str] = ()) -> dict[str, Any]:
    """Metrics of parsed outputs against reference label objects (same order). `schema` defaults to
    the student schema."""
    import warnings

    from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    schema = schema or student_schema()
    if len(parsed) != len(references):
        raise ValueError(f"{len(parsed)} outputs for {len(references)} references")
    fields = schema.keys
    n = len(parsed)
    n_valid = sum(p.value is not None for p in parsed)
    reasons = Counter(r for p in parsed if p.value is None for r in dict.fromkeys(p.reasons or ["unknown"]))
    kinds = Counter(k for p in parsed if p.value is None
                    for k in dict.fromkeys(r.split(":", 1)[0] for r in p.reasons or ["unknown"]))
    out: dict[str, Any] = {
        "n": n,
        "valid": n_valid,
        "validity_rate": n_valid / n if n else 0.0,
        "failure_reasons": dict(reasons.most_common()),  # codes from psyfactory.core.labels, e.g. extra_key:mood
        "failure_kinds": dict(kinds.most_common()),  # the same without the key: outputs per kind
        "fenced": sum(p.fenced for p in parsed),
        "surrounding_text": sum(p.surrounding_text for p in parsed),
    }
    out["field_accuracy"] = {
        f: (sum(1 for p, r in zip(parsed, references, strict=True) if p.value is not None and p.value[f] == r[f]) / n
            if n else 0.0)
        for f in fields
    }
    ordinal: dict[str, Any] = {}
    for f in schema.ordinal_keys():
        pairs = [(r[f], p.value[f]) for p, r in zip(parsed, references, strict=True) if p.value is not None]
        if not pairs:
            ordinal[f] = {"n": 0, "mae": None, "qwk": None}
            continue
        ys, ps = zip(*pairs, strict=True)
        with warnings.catch_warnings():  # one-class data makes kappa undefined (nan): reported as null
            warnings.simplefilter("ignore")
            qwk = cohen_kappa_score(ys, ps, weights="quadratic", labels=schema.values(f))
        ordinal[f] = {"n": len(pairs), "mae": sum(abs(a - b) for a, b in pairs) / len(pairs),
                      "qwk": _nan_to_none(float(qwk))}
    out["ordinal"] = ordinal
    classes: dict[str, Any] = {}
    for f in schema.categorical_keys():
        labels = schema.values(f)
        refs = [r[f] for r in references]
        preds = [p.value[f] if p.value is not None else INVALID for p in parsed]
        if n:
            prec, rec, _, sup = precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
            cm = confusion_matrix(refs, preds, labels=[*labels, INVALID])[: len(labels)]
        else:
            prec = rec = sup = [0] * len(labels)
            cm = [[0] * (len(labels) + 1) for _ in labels]
        classes[f] = {"per_class": {c: {"precision": float(prec[i]), "recall": float(rec[i]), "support": int(sup[i])}
                                    for i, c in enumerate(labels)},
                      "confusion": [list(map(int, row)) for row in cm], "confusion_labels": [*labels, INVALID]}
    out["classes"] = classes
    if safety_field:
        if safety_field not in classes:
            raise EvalError(f"json_labels: safety_field {safety_field!r} is not a categorical field of "
                            f"{schema.path} ({', '.join(classes) or 'none'})")
        pc = classes[safety_field]["per_class"]
        unknown = [c for c in safety_classes if c not in pc]
        if unknown:
            raise EvalError(f"json_labels: safety_classes {unknown} are not values of {safety_field} in {schema.path}")
        # safety recall: None when the class has no reference example (undefined, not perfect)
        out["safety_recall"] = {c: (pc[c]["recall"] if pc[c]["support"] else None) for c in safety_classes}
    return out


def parse_reference(text: str, where: str, schema: LabelSchema) -> dict[str, Any]:
    try:
        ref = json.loads(text)
    except json.JSONDecodeError as e:
        raise EvalError(f"{where}: reference is not JSON: {e.msg}") from None
    missing = [f for f in schema.keys if not isinstance(ref, dict) or f not in ref]
    if missing:
        raise EvalError(f"{where}: reference lacks fields {missing} of {schema.path.name}")
    return ref


def parse_output(text: str, schema: LabelSchema | None = None) -> Parsed:
    """Parse one model output (tolerant extraction + schema check)."""
    p = (schema or student_schema()).parse(text)
    return Parsed(p.labels, p.reasons, p.extraction.fenced, p.extraction.surrounded)


class JsonLabelsPlugin(EvalPlugin):
    name = "json_labels"
    Options = Options

    def headline_keys(self, metrics: dict[str, Any]) -> list[str]:
        return ["n", "validity_rate", *(f"safety_recall.{c}" for c in metrics.get("safety_recall", {})),
                *(f"field_accuracy.{f}" for f in metrics.get("classes", {})),
                *(f"ordinal.{f}.qwk" for f in metrics.get("ordinal", {}))]

    def paired(self, items: list[dict[str, Any]]) -> dict[str, dict[str, bool]] | None:
        fields = sorted({f for it in items for f in it.get("correct", {})})
        return {f: {it["id"]: bool(it["correct"][f]) for it in items} for f in fields} or None

    def run(self, ctx: EvalContext) -> PluginResult:
        assert ctx.predictions is not None
        if ctx.label_schema is None:
            raise EvalError(f"json_labels: task {ctx.task!r} has no psy.label_schema")
        opts: Options = ctx.options or Options()
        schema = ctx.label_schema
        refs = [parse_reference(s.reference, f"sample {s.id}", schema) for s in ctx.samples]
        parsed = [parse_output(p, schema) for p in ctx.predictions]
        m = score(parsed, refs, schema, opts.safety_field, opts.safety_classes)
        lines = ["## json_labels"]
        if "safety_recall" in m:
            sr = m["safety_recall"]
            lines.append(f"**Safety: {opts.safety_field} recall** on "
                         + ", on ".join(f"`{c}` = " + ("n/a (no reference example)" if v is None else f"**{v:.4f}**")
                                        for c, v in sr.items()) + ".")
        lines.append(f"n = {m['n']}; valid JSON labels: {m['valid']} ({m['validity_rate']:.2%}); "
                     f"code-fenced: {m['fenced']}; with surrounding text: {m['surrounding_text']}.")
        if m["failure_reasons"]:
            lines.append(md_table(["failure reason", "outputs"], list(m["failure_reasons"].items())))
            lines.append(md_table(["failure kind", "outputs"], list(m["failure_kinds"].items())))
        lines.append(md_table(["field", "exact accuracy", "MAE", "QWK"],
                              [(f, m["field_accuracy"][f], m["ordinal"].get(f, {}).get("mae", "-"),
                                m["ordinal"].get(f, {}).get("qwk", "-")) for f in schema.keys]))
        plots = []
        for f, cls in m["classes"].items():
            pc = cls["per_class"]
            first = [c for c in (opts.safety_classes if f == opts.safety_field else []) if c in pc]
            order = [*first, *(c for c in pc if c not in first)]
            lines.append(md_table([f, "precision", "recall", "support"],
                                  [(c, pc[c]["precision"], pc[c]["recall"], pc[c]["support"]) for c in order]))
            plot = f"{f}_confusion.png"
            save_confusion_png(cls["confusion"], cls["confusion_labels"], ctx.out_dir / plot, f"{ctx.task}: {f}",
                               row_labels=cls["confusion_labels"][:-1])
            lines.append(f"![{f} confusion matrix]({plot})")
            plots.append(plot)
        items = [{"id": s.id, "prediction": p, "valid": q.value is not None, "reasons": q.reasons, "parsed": q.value,
                  "correct": {f: q.value is not None and q.value[f] == r[f] for f in schema.keys}}
                 for s, p, q, r in zip(ctx.samples, ctx.predictions, parsed, refs, strict=True)]
        return PluginResult(m, "\n\n".join(lines), plots, items)
