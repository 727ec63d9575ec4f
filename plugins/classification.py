"""`classification`: single-label tasks (emotion): accuracy, macro-F1, per-class P/R/F1, confusion matrix.

Scoring (option `scoring`):

* ``loglik`` (default): the log-likelihood of each allowed label as the model's reply to the prompt
  (teacher-forced, summed over the label's tokens); the most likely label is the answer. Every answer
  is a label, so a base model that would chat instead of answering is still measured; the accuracy of
  the length-normalised choice (mean log-probability per token) is reported too.
* ``generate``: the shared greedy generation, normalised (case, quotes, trailing punctuation) and
  matched against the labels; anything else is an invalid answer, counted as wrong and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from psyfactory.core.errors import EvalError
from psyfactory.plugins.base import (
    EvalContext,
    EvalPlugin,
    PluginOptions,
    PluginResult,
    md_table,
    save_confusion_png,
)

EMOTION_LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")
INVALID = "(invalid)"
_STRIP = " \t\r\n\"'`.,!。！，:;*"


class Options(PluginOptions):
    labels: list[str] = list(EMOTION_LABELS)  # the allowed answers
    scoring: Literal["loglik", "generate"] = "loglik"


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


def choose_by_loglik(backend: Any, samples: Sequence[Any], labels: Sequence[str], spec: Any = None,
                     ) -> tuple[list[str], list[str], list[list[float]]]:
    """(most likely label, most likely by mean log-probability per token, the log-probabilities); `spec`: the
    task's generation spec (its thinking switch and rendering shape the prompt). A backend that classifies
    texts itself (`label_logprobs`: a classification head) is asked for the texts under assessment; its
    classes are single outputs, so no length normalisation applies."""
    classify = getattr(backend, "label_logprobs", None)
    if callable(classify):
        logps = classify([s.input_text() for s in samples], list(labels))
        best = [labels[max(range(len(lp)), key=lp.__getitem__)] for lp in logps]
        return best, best, logps
    logps = backend.option_logprobs([s.messages for s in samples], [list(labels)] * len(samples), spec=spec)
    count = getattr(backend, "count_tokens", None)  # backends that can say how many tokens a label is
    n_tokens = [max(1, count(lab)) if count else max(1, len(lab)) for lab in labels]
    best = [labels[max(range(len(lp)), key=lp.__getitem__)] for lp in logps]
    norm = [labels[max(range(len(lp)), key=lambda j, lp=lp: lp[j] / n_tokens[j])] for lp in logps]
    return best, norm, logps


class ClassificationPlugin(EvalPlugin):
    name = "classification"
    Options = Options
    headline = ("n", "accuracy", "macro_f1", "invalid_rate")

    def needs_generations(self, options: Options) -> bool:
        return options.scoring == "generate"

    def needs_loglik(self, options: Options) -> bool:
        return options.scoring == "loglik"

    def paired(self, items: list[dict[str, Any]]) -> dict[str, dict[str, bool]] | None:
        return {"label": {it["id"]: bool(it["correct"]) for it in items}} if items else None

    def run(self, ctx: EvalContext) -> PluginResult:
        opts: Options = ctx.options or Options()
        labels = list(opts.labels)
        refs = [s.reference for s in ctx.samples]
        extra: dict[str, Any] = {}
        if opts.scoring == "loglik":
            if ctx.backend is None:
                raise ValueError("classification: loglik scoring needs a model backend")
            outputs, norm, logps = choose_by_loglik(ctx.backend, ctx.samples, labels, ctx.generation)
            normed = score(norm, refs, labels)
            extra = {"length_normalised": {"accuracy": normed["accuracy"], "macro_f1": normed["macro_f1"]}}
        else:
            assert ctx.predictions is not None
            outputs, logps = list(ctx.predictions), []
        m = {"scoring": opts.scoring, **score(outputs, refs, labels), **extra}
        plot = "classification_confusion.png"
        if m["n"]:
            save_confusion_png(m["confusion"], [*labels, INVALID], ctx.out_dir / plot, f"{ctx.task.name}: confusion")
        rows = [(lab, c["precision"], c["recall"], c["f1"], c["support"]) for lab, c in m["per_class"].items()]
        how = ("scoring **loglik** (the most likely label; length-normalised: accuracy "
               f"{extra['length_normalised']['accuracy']:.4f})" if extra else
               f"scoring **generate**; outputs that are not a label: {m['invalid']} ({m['invalid_rate']:.2%})")
        report = "\n\n".join([
            "## classification",
            f"n = {m['n']}; accuracy **{m['accuracy']:.4f}**, macro-F1 **{m['macro_f1']:.4f}**; {how}.",
            md_table(["label", "precision", "recall", "F1", "support"], rows),
            f"![confusion matrix]({plot})" if m["n"] else "",
        ])
        items = []
        for i, (s, p) in enumerate(zip(ctx.samples, outputs, strict=True)):
            item = {"id": s.id, "reference": s.reference, "prediction": p, "label": normalize_label(p, labels),
                    "correct": normalize_label(p, labels) == normalize_label(s.reference, labels)}
            if logps:
                item["logprobs"] = dict(zip(labels, (round(x, 4) for x in logps[i]), strict=True))
            items.append(item)
        return PluginResult(m, report, [plot] if m["n"] else [], items)
