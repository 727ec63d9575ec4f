"""`classification`: single-label outputs (emotion task): accuracy, macro-F1, per-class P/R/F1,
confusion matrix PNG, and the rate of outputs that are not one of the labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plugins.base import EvalContext, EvalPlugin, PluginOptions, PluginResult, md_table, save_confusion_png
from psyfactory.core.errors import EvalError

EMOTION_LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")
INVALID = "(invalid)"
_STRIP = " \t\r\n\"'`.,!。！，:;*"


class Options(PluginOptions):
    labels: list[str] = list(EMOTION_LABELS)  # the allowed answers; a reply is normalised, then matched


def normalize_label(text: str, labels: Sequence[str]) -> str | None:
    """The label the output names, or None. Case, surrounding whitespace, quotes and trailing
    punctuation are forgiven; anything else (extra words, empty output) is not a label."""
    word = text.strip().strip(_STRIP).lower()
    return word if word in labels else None


def score(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] = EMOTION_LABELS) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    labels = list(labels)
    refs = []
    for i, r in enumerate(references):
        ref = normalize_label(r, labels)
        if ref is None:
            raise EvalError(f"reference #{i} {r!r} is not one of the labels {labels} "
                            "(psy.eval_options.classification.labels)")
        refs.append(ref)
    preds = [normalize_label(p, labels) or INVALID for p in predictions]
    n = len(refs)
    if n == 0:
        return {"n": 0, "accuracy": 0.0, "macro_f1": 0.0, "invalid_rate": 0.0, "invalid": 0,
                "labels": labels, "per_class": {}, "confusion": []}
    p, r, f, s = precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
    cm_labels = [*labels, INVALID]
    cm = confusion_matrix(refs, preds, labels=cm_labels)[: len(labels)]  # no reference is INVALID
    invalid = preds.count(INVALID)
    return {
        "n": n,
        "accuracy": float(accuracy_score(refs, preds)),
        # macro over the label set; an invalid output is a miss for its reference class
        "macro_f1": float(f1_score(refs, preds, labels=labels, average="macro", zero_division=0)),
        "invalid": invalid,
        "invalid_rate": invalid / n,
        "labels": labels,
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
        "confusion": cm.tolist(),  # rows: reference labels; columns: labels + "(invalid)"
    }


class ClassificationPlugin(EvalPlugin):
    name = "classification"
    Options = Options
    headline = ("n", "accuracy", "macro_f1", "invalid_rate")

    def paired(self, items: list[dict[str, Any]]) -> dict[str, dict[str, bool]] | None:
        return {"label": {it["id"]: bool(it["correct"]) for it in items}} if items else None

    def run(self, ctx: EvalContext) -> PluginResult:
        assert ctx.predictions is not None
        labels = list((ctx.options or Options()).labels)
        m = score(ctx.predictions, [s.reference for s in ctx.samples], labels)
        plot = "classification_confusion.png"
        if m["n"]:
            save_confusion_png(m["confusion"], [*labels, INVALID], ctx.out_dir / plot, f"{ctx.task}: confusion")
        rows = [(lab, c["precision"], c["recall"], c["f1"], c["support"]) for lab, c in m["per_class"].items()]
        report = "\n\n".join([
            "## classification",
            f"n = {m['n']}; accuracy **{m['accuracy']:.4f}**, macro-F1 **{m['macro_f1']:.4f}**; "
            f"outputs that are not a label: {m['invalid']} ({m['invalid_rate']:.2%}).",
            md_table(["label", "precision", "recall", "F1", "support"], rows),
            f"![confusion matrix]({plot})" if m["n"] else "",
        ])
        items = [{"id": s.id, "reference": s.reference, "prediction": p, "label": normalize_label(p, labels),
                  "correct": normalize_label(p, labels) == normalize_label(s.reference, labels)}
                 for s, p in zip(ctx.samples, ctx.predictions, strict=True)]
        return PluginResult(m, report, [plot] if m["n"] else [], items)
