"""`json_labels`: structured label outputs of a label task (the student task's four labels, or any
task whose `psy.label_schema` names a flat JSON Schema of enum fields).

Each output is parsed tolerantly and validated against the task's schema by
:mod:`psyfactory.core.labels` (code fences and surrounding text are tolerated and counted). Reported:
validity rate with the failure reasons, per-field exact accuracy (an invalid output is wrong on every
field), MAE and quadratic weighted kappa for the ordinal (integer) fields on valid outputs, and for
each categorical (string) field per-class precision/recall with a confusion matrix. With
``safety_field`` / ``safety_classes`` (the student task: ``risk_flag``; ``suicidal``, ``self_harm``,
``violence``) their recall comes first with a 95% Wilson interval: it is the safety figure. A class
with fewer than ``min_support`` examples in the eval set is reported as not measurable (recall null,
its count and hits shown).

Beside the per-class figures, "flagged at all" (any value but ``safety_none``): recall on the
items whose reference is a safety class and the raise rate on those whose reference is ``none``,
with Wilson intervals; for named subsets of items (``safety_groups``, by the eval records' `meta`:
the SOS-1K levels 0-2) and broken down by a `meta` key (``breakdown``: level, fold).

With ``safety_net`` (a crisis lexicon, psyfactory.core.safety) the net is applied to every answer:
crisis language in the input raises the safety field from its no-risk value (or from an invalid
answer), never lowers it. With ``detector`` (psyfactory.core.detector) a learned detector sits
beside the lexicon (net = lexicon OR detector; the lexicon alone, said so, when it is not trained).
The report gives the model alone, model + net, the net alone, the lexicon alone and the detector
alone side by side, an exact McNemar test between model and model + net, and each item record says
what the net did and which part fired.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from psyfactory.core import detector as detmod
from psyfactory.core.errors import EvalError, UserError
from psyfactory.core.labels import LabelSchema
from psyfactory.core.paths import repo_path
from psyfactory.core.safety import NetDecision, SafetyNet, load_lexicon
from psyfactory.plugins.base import (
    EvalContext,
    EvalPlugin,
    PluginOptions,
    PluginResult,
    TaskInfo,
    fmt,
    mcnemar_exact,
    md_table,
    save_confusion_png,
    wilson_ci,
)

INVALID = "(invalid)"
DEFAULT_MIN_SUPPORT = 10


class Options(PluginOptions):
    safety_field: str | None = None  # a categorical field whose recall is the safety figure (risk_flag)
    safety_classes: list[str] = []  # its classes that must be found (suicidal, self_harm, violence)
    # a safety class with fewer examples than this in the eval set is "not measurable" (recall null)
    min_support: int = Field(DEFAULT_MIN_SUPPORT, ge=1)
    safety_net: str | None = None  # crisis lexicon file (repo-relative) applied to the input; None: no net
    safety_none: str = "none"  # the safety field's no-risk value, the only one the net may raise
    # a learned crisis detector beside the lexicon (psyfactory.core.detector.DETECTORS, `make crisis-detector`)
    detector: str | None = None
    # keys of the eval records' `meta` to break the safety figures down by (e.g. level, fold)
    breakdown: list[str] = []
    # named subsets of the items by `meta` values, e.g. {"levels 0-2": {"level": [0, 1, 2]}}
    safety_groups: dict[str, dict[str, list[Any]]] = {}


SYSTEMS = {"model": "model", "model_net": "model + net", "net": "net alone", "lexicon": "lexicon alone",
           "detector": "detector alone"}


@dataclass
class Parsed:
    """Outcome of parsing one output: the validated label object or None, and why it failed."""

    value: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    fenced: bool = False
    surrounding_text: bool = False


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def class_table(refs: Sequence[Any], preds: Sequence[Any], classes: Sequence[str], min_support: int,
                ) -> dict[str, dict[str, Any]]:
    """Per class: examples, found, recall with a 95% Wilson interval (null when fewer than
    `min_support` examples: not measurable), predicted, precision with its interval (null when never
    predicted)."""
    out = {}
    for c in classes:
        support = sum(r == c for r in refs)
        found = sum(r == c and p == c for r, p in zip(refs, preds, strict=True))
        predicted = sum(p == c for p in preds)
        measurable = support >= min_support
        out[c] = {"support": support, "found": found, "measurable": measurable,
                  "recall": found / support if measurable else None,
                  "recall_ci95": list(wilson_ci(found, support)) if measurable else None,
                  "predicted": predicted, "precision": found / predicted if predicted else None,
                  "precision_ci95": list(wilson_ci(found, predicted)) if predicted else None}
    return out


def flag_table(refs: Sequence[Any], preds: Sequence[Any], classes: Sequence[str], none: str) -> dict[str, Any]:
    """Flagged at all (a value other than `none`, and a valid answer): recall on the items whose reference
    is one of `classes`, raise rate on those whose reference is `none`, each with a 95% Wilson interval."""
    flagged = [p not in (none, INVALID) for p in preds]
    pos = [f for r, f in zip(refs, flagged, strict=True) if r in classes]
    neg = [f for r, f in zip(refs, flagged, strict=True) if r == none]
    return {"n": len(refs), "flagged": sum(flagged),
            "positives": len(pos), "found": sum(pos), "recall": sum(pos) / len(pos) if pos else None,
            "recall_ci95": list(wilson_ci(sum(pos), len(pos))) if pos else None,
            "negatives": len(neg), "raised": sum(neg), "raise_rate": sum(neg) / len(neg) if neg else None,
            "raise_ci95": list(wilson_ci(sum(neg), len(neg))) if neg else None,
            "flag_rate": sum(flagged) / len(refs) if refs else None,
            "flag_ci95": list(wilson_ci(sum(flagged), len(refs))) if refs else None}


def _matches(meta: dict[str, Any], conditions: dict[str, list[Any]]) -> bool:
    return all(meta.get(k) in values for k, values in conditions.items())


def safety_views(refs: Sequence[Any], systems: dict[str, Sequence[Any]], metas: Sequence[dict[str, Any]],
                 classes: Sequence[str], none: str, groups: dict[str, dict[str, list[Any]]],
                 breakdown: Sequence[str]) -> dict[str, Any]:
    """Flagged-at-all figures of every system: over all items, per named group, per value of each
    breakdown key (items without that key are left out of its table)."""

    def tables(idx: list[int]) -> dict[str, Any]:
        return {name: flag_table([refs[i] for i in idx], [preds[i] for i in idx], classes, none)
                for name, preds in systems.items()}

    everything = list(range(len(refs)))
    out: dict[str, Any] = {"flag": tables(everything),
                           "groups": {g: tables([i for i in everything if _matches(metas[i], cond)])
                                      for g, cond in groups.items()}}
    by: dict[str, Any] = {}
    for key in breakdown:
        values = sorted({metas[i][key] for i in everything if key in metas[i]}, key=lambda v: (str(type(v)), v))
        if not values:
            raise EvalError(f"json_labels: breakdown key {key!r} is in no eval record's `meta` "
                            f"({', '.join(sorted({k for m in metas for k in m})) or 'the records have no meta'})")
        by[key] = {str(v): tables([i for i in everything if metas[i].get(key) == v]) for v in values}
    out["breakdown"] = by
    return out


def score(parsed: Sequence[Parsed], references: Sequence[dict[str, Any]], schema: LabelSchema,
          safety_field: str | None = None, safety_classes: Sequence[str] = (),
          min_support: int = DEFAULT_MIN_SUPPORT) -> dict[str, Any]:
    """Metrics of parsed outputs against reference label objects (same order), under the task's schema."""
    import warnings

    from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

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
        refs = [r[safety_field] for r in references]
        preds = [p.value[safety_field] if p.value is not None else INVALID for p in parsed]
        table = class_table(refs, preds, safety_classes, min_support)
        out["safety"] = {"field": safety_field, "min_support": min_support, "classes": table}
        # the headline: None when the class is not measurable (too few examples), never a made-up value
        out["safety_recall"] = {c: table[c]["recall"] for c in safety_classes}
    return out


def net_systems(net: SafetyNet, decisions: Sequence[NetDecision], parsed: Sequence[Parsed]) -> dict[str, list[Any]]:
    """The safety field's value per item as each system gives it: the model, model + net, the net alone,
    the lexicon alone and (when the net has a trained detector) the detector alone."""
    f, none = net.field, net.none_value
    out: dict[str, list[Any]] = {
        "model": [p.value[f] if p.value is not None else INVALID for p in parsed],
        "model_net": [d.value if d.value is not None else INVALID for d in decisions],
        "net": [d.found or none for d in decisions],
        "lexicon": [d.hit.cls if d.hit else none for d in decisions],
    }
    if net.detector is not None:
        out["detector"] = [d.detector.cls if d.detector and d.detector.fired else none for d in decisions]
    return out


def net_metrics(net: SafetyNet, decisions: Sequence[NetDecision], references: Sequence[dict[str, Any]],
                parsed: Sequence[Parsed], classes: Sequence[str], min_support: int) -> dict[str, Any]:
    """Model alone, model + net, the net alone and each of its parts on the safety field, side by side."""
    f = net.field
    refs = [r[f] for r in references]
    systems = net_systems(net, decisions, parsed)
    model, with_net = systems["model"], systems["model_net"]
    raised = [d for d in decisions if d.raised]
    model_net = class_table(refs, with_net, classes, min_support)
    fired = Counter("+".join(d.fired) for d in decisions if d.fired)
    det = net.detector
    pos = [r in classes for r in refs]
    return {
        "lexicon": str(net.lexicon.path), "lexicon_sha256": net.lexicon.sha256, "field": f,
        "net": net.describe(),
        "detector": None if not net.detector_name else {
            "name": net.detector_name, "trained": det is not None,
            **({"threshold": det.threshold, "sha256": det.sha256, "file": str(det.path),
                "data_sha256": det.info.get("data_sha256"), "cv": det.info.get("cv"),
                "scored_out_of_fold": sum(bool(d.detector and d.detector.out_of_fold) for d in decisions),
                "not_scored": sum(bool(d.detector and d.detector.score is None) for d in decisions),
                "vetoed_by_lexicon": sum(bool(d.detector and d.detector.vetoed) for d in decisions)}
               if det is not None else {})},
        "raised": len(raised), "raised_from_none": sum(d.model is not None for d in raised),
        "raised_from_invalid": sum(d.model is None for d in raised),
        "raised_by_class": dict(Counter(d.value for d in raised).most_common()),
        "raised_by_part": {"lexicon": sum(d.fired == ["lexicon"] for d in raised),
                           "detector": sum(d.fired == ["detector"] for d in raised),
                           "both": sum(len(d.fired) == 2 for d in raised)},
        "fired": {"lexicon_only": fired.get("lexicon", 0), "detector_only": fired.get("detector", 0),
                  "both": fired.get("lexicon+detector", 0)},
        "raised_wrongly": sum(d.value != r for d, r in zip(decisions, refs, strict=True) if d.raised),
        "items_with_reports": sum(any(h.status == "report" for h in d.hits) for d in decisions),
        "items_with_negated": sum(any(h.status == "negated" for h in d.hits) for d in decisions),
        "items_with_excluded": sum(any(h.status == "excluded" for h in d.hits) for d in decisions),
        "model": class_table(refs, model, classes, min_support),
        "model_net": model_net,
        "net_alone": class_table(refs, systems["net"], classes, min_support),
        "lexicon_alone": class_table(refs, systems["lexicon"], classes, min_support),
        **({"detector_alone": class_table(refs, systems["detector"], classes, min_support)} if det is not None else {}),
        "recall": {c: t["recall"] for c, t in model_net.items()},
        "precision": {c: t["precision"] for c, t in model_net.items()},
        # exact McNemar on the safety field's correctness, model alone (a) vs model + net (b)
        "mcnemar": mcnemar_exact([m == r for m, r in zip(model, refs, strict=True)],
                                 [w == r for w, r in zip(with_net, refs, strict=True)]),
        # ... and on being flagged at all when (and only when) the reference is a safety class
        "mcnemar_flag": mcnemar_exact(
            [(m not in (net.none_value, INVALID)) == p for m, p in zip(model, pos, strict=True)],
            [(w not in (net.none_value, INVALID)) == p for w, p in zip(with_net, pos, strict=True)]),
    }


def _recall_cell(t: dict[str, Any], min_support: int) -> str:
    if not t["measurable"]:
        return f"{t['found']}/{t['support']}, not measurable (< {min_support})"
    lo, hi = t["recall_ci95"]
    return f"{t['found']}/{t['support']} = {t['recall']:.3f} [{lo:.3f}, {hi:.3f}]"


def _precision_cell(t: dict[str, Any]) -> str:
    if not t["predicted"]:
        return "n/a (never predicted)"
    lo, hi = t["precision_ci95"]
    return f"{t['found']}/{t['predicted']} = {t['precision']:.3f} [{lo:.3f}, {hi:.3f}]"


def parse_reference(text: str, where: str, schema: LabelSchema) -> dict[str, Any]:
    try:
        ref = json.loads(text)
    except json.JSONDecodeError as e:
        raise EvalError(f"{where}: reference is not JSON: {e.msg}") from None
    missing = [f for f in schema.keys if not isinstance(ref, dict) or f not in ref]
    if missing:
        raise EvalError(f"{where}: reference lacks fields {missing} of {schema.path.name}")
    return ref


def parse_output(text: str, schema: LabelSchema) -> Parsed:
    """Parse one model output (tolerant extraction + schema check)."""
    p = schema.parse(text)
    return Parsed(p.labels, p.reasons, p.extraction.fenced, p.extraction.surrounded)


class JsonLabelsPlugin(EvalPlugin):
    name = "json_labels"
    Options = Options

    def headline_keys(self, metrics: dict[str, Any]) -> list[str]:
        net = metrics.get("safety_net") or {}
        flag = (metrics.get("safety") or {}).get("flag") or {}
        return ["n", "validity_rate", *(f"safety_recall.{c}" for c in metrics.get("safety_recall", {})),
                *(f"safety_net.recall.{c}" for c in net.get("recall", {})), *(["safety_net.raised"] if net else []),
                *(f"safety.flag.{s}.{k}" for s in ("model", "model_net") if s in flag for k in ("recall", "raise_rate")),
                *(f"field_accuracy.{f}" for f in metrics.get("classes", {})),
                *(f"ordinal.{f}.qwk" for f in metrics.get("ordinal", {}))]

    def check(self, options: Options, task: TaskInfo) -> None:
        where = f"{task.source or task.name}: psy.eval_options.json_labels"
        schema = task.label_schema
        if schema is None or not schema.categorical_keys():
            raise EvalError(f"{task.source or task.name}: eval plugin json_labels needs psy.label_schema (the JSON "
                            "Schema of the task's answer, with at least one enum field)")
        if options.safety_field is not None:
            if options.safety_field not in schema.categorical_keys():
                raise EvalError(f"{where}.safety_field {options.safety_field!r} is not an enum field of "
                                f"{schema.path.name} ({', '.join(schema.categorical_keys())})")
            values = schema.values(options.safety_field)
            want = [*options.safety_classes, *([options.safety_none] if options.safety_net else [])]
            bad = [c for c in want if c not in values]
            if bad:
                raise EvalError(f"{where}: {', '.join(map(repr, bad))} not a value of {options.safety_field} in "
                                f"{schema.path.name} ({', '.join(map(str, values))})")
        elif options.breakdown or options.safety_groups:
            raise EvalError(f"{where}: breakdown and safety_groups break down the safety figures: they need "
                            "safety_field")
        if options.safety_net is not None:
            if not options.safety_field:
                raise EvalError(f"{where}.safety_net needs safety_field (the field it raises)")
            load_lexicon(options.safety_net)  # a missing or broken lexicon fails before any model loads
        if options.detector is not None:
            if not options.safety_net:
                raise EvalError(f"{where}.detector sits beside the lexicon: it needs safety_net")
            try:
                spec = detmod.spec_of(options.detector)
            except UserError as e:
                raise EvalError(f"{where}.detector: {e}") from None
            if options.safety_field and spec.cls not in schema.values(options.safety_field):
                raise EvalError(f"{where}.detector {spec.name} raises {spec.cls!r}, not a value of "
                                f"{options.safety_field} in {schema.path.name}")
            detmod.load_detector(options.detector)  # an unreadable cached model fails here (not trained: fine)

    def files(self, options: Options) -> list[Path]:
        if not options or not options.safety_net:
            return []
        trained = detmod.current_file(options.detector) if options.detector else None
        return [repo_path(options.safety_net), *([trained] if trained else [])]

    def safety_net(self, options: Options) -> SafetyNet | None:
        if options is None or not options.safety_net or not options.safety_field:
            return None
        det = detmod.load_detector(options.detector) if options.detector else None
        return SafetyNet(load_lexicon(options.safety_net), options.safety_field, options.safety_none,
                         detector=det, detector_name=options.detector)

    def paired(self, items: list[dict[str, Any]]) -> dict[str, dict[str, bool]] | None:
        fields = sorted({f for it in items for f in it.get("correct", {})})
        return {f: {it["id"]: bool(it["correct"][f]) for it in items if f in it["correct"]} for f in fields} or None

    def run(self, ctx: EvalContext) -> PluginResult:
        assert ctx.predictions is not None
        if ctx.label_schema is None:
            raise EvalError(f"json_labels: task {ctx.task.name!r} has no psy.label_schema")
        opts: Options = ctx.options or Options()
        schema = ctx.label_schema
        refs = [parse_reference(s.reference, f"sample {s.id}", schema) for s in ctx.samples]
        parsed = [parse_output(p, schema) for p in ctx.predictions]
        m = score(parsed, refs, schema, opts.safety_field, opts.safety_classes, opts.min_support)
        net = self.safety_net(opts)
        decisions: list[NetDecision] = []
        if net is not None:
            try:
                net.check(schema.values(net.field), f"{schema.path}: {net.field}")
            except UserError as e:
                raise EvalError(str(e)) from None
            decisions = [net.decide(q.value, s.input_text()) for s, q in zip(ctx.samples, parsed, strict=True)]
            m["safety_net"] = net_metrics(net, decisions, refs, parsed, opts.safety_classes, opts.min_support)
        if opts.safety_field:
            f = opts.safety_field
            systems = (net_systems(net, decisions, parsed) if net is not None else
                       {"model": [q.value[f] if q.value is not None else INVALID for q in parsed]})
            m["safety"].update(safety_views([r[f] for r in refs], systems, [s.meta for s in ctx.samples],
                                            opts.safety_classes, opts.safety_none, opts.safety_groups, opts.breakdown))
        lines = ["## json_labels"]
        if "safety" in m:
            rows = m["safety"]["classes"]
            lines.append(f"**Safety: {opts.safety_field} recall** (95% Wilson interval; a class with fewer than "
                         f"{opts.min_support} examples in the eval set is not measurable, `min_support`):")
            lines.append(md_table([f"{opts.safety_field} class", "examples", "found", "recall", "95% CI"], [
                (c, t["support"], t["found"], fmt(t["recall"]) if t["measurable"] else "not measurable",
                 f"[{t['recall_ci95'][0]:.3f}, {t['recall_ci95'][1]:.3f}]" if t["measurable"] else "-")
                for c, t in rows.items()]))
        if "safety_net" in m:
            lines.append(self._net_report(m["safety_net"], opts))
        if "safety" in m:
            lines.append(self._flag_report(m["safety"], opts))
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
            save_confusion_png(cls["confusion"], cls["confusion_labels"], ctx.out_dir / plot, f"{ctx.task.name}: {f}",
                               row_labels=cls["confusion_labels"][:-1])
            lines.append(f"![{f} confusion matrix]({plot})")
            plots.append(plot)
        items = [{"id": s.id, "prediction": p, "valid": q.value is not None, "reasons": q.reasons, "parsed": q.value,
                  "correct": {f: q.value is not None and q.value[f] == r[f] for f in schema.keys},
                  **({"meta": s.meta} if s.meta else {})}
                 for s, p, q, r in zip(ctx.samples, ctx.predictions, parsed, refs, strict=True)]
        if opts.safety_field:
            f, none = opts.safety_field, opts.safety_none
            for it, q, r in zip(items, parsed, refs, strict=True):
                if r[f] in opts.safety_classes or r[f] == none:  # flagged at all, right when the reference is a risk
                    it["correct"][f"{f}:flagged"] = (q.value is not None and q.value[f] != none) == (r[f] != none)
        for it, d, r in zip(items, decisions, refs, strict=False):  # no net: no decisions
            it["net"] = d.record()
            it["correct"][f"{d.field}+net"] = d.value == r[d.field]
            if f"{d.field}:flagged" in it["correct"]:
                it["correct"][f"{d.field}+net:flagged"] = (d.value is not None and d.value != opts.safety_none) == (
                    r[d.field] != opts.safety_none)
        return PluginResult(m, "\n\n".join(lines), plots, items)

    @staticmethod
    def _net_report(sn: dict[str, Any], opts: Options) -> str:
        k = opts.min_support
        rp = sn["raised_by_part"]
        det = sn.get("detector") or {}
        if det and det.get("trained"):
            det_line = (f" Detector `{det['name']}` (threshold {det['threshold']:.3f}, sha256 {det['sha256'][:12]}): "
                        f"raised {rp['detector']} answers alone, {rp['both']} together with the lexicon; "
                        f"{det['scored_out_of_fold']} items are texts it was trained on, scored out of fold; "
                        f"{det['not_scored']} not scored (no Chinese text or no n-gram it knows); "
                        f"{det['vetoed_by_lexicon']} with chunks left to the lexicon's ruling (negated, figure "
                        "of speech, about someone else).")
        elif det:
            det_line = (f" **Detector `{det['name']}` is not trained: the net is the lexicon alone** "
                        "(`make crisis-detector` trains it).")
        else:
            det_line = ""
        head = (f"### Crisis safety net\n\nNet: {sn['net']}. Applied to the input, it raised `{sn['field']}` on "
                f"{sn['raised']} answers ({sn['raised_from_none']} from `{opts.safety_none}`, "
                f"{sn['raised_from_invalid']} invalid answers; by the lexicon {rp['lexicon']}, the detector "
                f"{rp['detector']}, both {rp['both']}), {sn['raised_wrongly']} of them to a class the reference does not "
                f"hold; it never lowers a value.{det_line} Items with crisis language about someone else (not raised): "
                f"{sn['items_with_reports']}; negated: {sn['items_with_negated']}; figures of speech / accidents / "
                f"benign contexts: {sn['items_with_excluded']}. Each item record in `json_labels_items.jsonl` has a "
                "`net` field (`fired`: which part).")
        cols = [c for c in ("model", "model_net", "net_alone", "lexicon_alone", "detector_alone") if c in sn]
        names = {"net_alone": "net", "lexicon_alone": "lexicon", "detector_alone": "detector"}
        label = {c: SYSTEMS[names.get(c, c)] for c in cols}
        rows = [(c, *(_recall_cell(sn[s][c], k) for s in cols), *(_precision_cell(sn[s][c]) for s in cols))
                for c in sn["model"]]
        mc, mf = sn["mcnemar"], sn["mcnemar_flag"]
        return "\n\n".join([
            head,
            md_table([sn["field"], *(f"recall: {label[c]}" for c in cols), *(f"precision: {label[c]}" for c in cols)],
                     rows),
            f"Paired, model alone vs model + net (exact McNemar on {mc['n']} items): `{sn['field']}` correct: "
            f"{mc['only_b']} items only with the net right, {mc['only_a']} only without; "
            f"Δ accuracy {mc['diff']:+.4f}, p = {mc['p_value']:.4g}. Flagged at all exactly when the reference is a "
            f"risk: {mf['only_b']} only with the net right, {mf['only_a']} only without; Δ {mf['diff']:+.4f}, "
            f"p = {mf['p_value']:.4g}."])

    @staticmethod
    def _flag_report(sf: dict[str, Any], opts: Options) -> str:
        systems = list(sf["flag"])
        classes = "/".join(opts.safety_classes) or "a risk"
        out = [f"### Flagged at all\n\nAn answer is flagged when `{opts.safety_field}` is valid and not "
               f"`{opts.safety_none}`. Recall: flagged among the items whose reference is {classes}; raise rate: "
               f"flagged among those whose reference is `{opts.safety_none}` (false raises); 95% Wilson intervals.",
               md_table(["system", f"recall ({classes})", f"raise rate (reference {opts.safety_none})"],
                        [(SYSTEMS[s], _rate(sf["flag"][s], "found", "positives", "recall_ci95"),
                          _rate(sf["flag"][s], "raised", "negatives", "raise_ci95")) for s in systems])]
        if sf.get("groups"):
            out.append("Flagged among every item of a group (`safety_groups`, by the records' `meta`):")
            out.append(md_table(["group", "items", *(SYSTEMS[s] for s in systems)],
                                [(g, next(iter(t.values()))["n"], *(_rate(t[s], "flagged", "n", "flag_ci95")
                                                                  for s in systems))
                                 for g, t in sf["groups"].items()]))
        for key, by in (sf.get("breakdown") or {}).items():
            out.append(f"By `{key}` (`meta.{key}`): recall on {classes} / raise rate on `{opts.safety_none}`:")
            rows = []
            for value, t in by.items():
                first = next(iter(t.values()))
                rows.append((value, first["n"], first["positives"],
                             *(f"{t[s]['found']}/{t[s]['positives']} · {t[s]['raised']}/{t[s]['negatives']}"
                               for s in systems)))
            out.append(md_table([key, "items", classes, *(SYSTEMS[s] for s in systems)], rows))
        return "\n\n".join(out)


def _rate(t: dict[str, Any], k: str, n: str, ci: str) -> str:
    if not t[n]:
        return "-"
    lo, hi = t[ci]
    return f"{t[k]}/{t[n]} = {t[k] / t[n]:.3f} [{lo:.3f}, {hi:.3f}]"
