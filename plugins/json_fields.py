"""`json_fields`: answers that are one JSON object of free-text fields (LongEmotion's five-field ES
summary), checked against the task's `psy.label_schema`.

Reported: validity (the answer parses and matches the schema; reasons as in `json_labels`), and per
field the generation metrics of `generation` (ROUGE-1/2/L, BLEU-4) of the answer's field against the
reference's (an invalid answer scores 0 on every field), with their mean over the fields.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Any, Literal

from psyfactory.core.errors import EvalError
from psyfactory.plugins.base import EvalContext, EvalPlugin, PluginOptions, PluginResult, TaskInfo, md_table
from psyfactory.plugins.generation import score as text_score

METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")


class Options(PluginOptions):
    lang: Literal["auto", "zh", "en"] = "auto"  # tokenisation for the text metrics


class JsonFieldsPlugin(EvalPlugin):
    name = "json_fields"
    Options = Options

    def headline_keys(self, metrics: dict[str, Any]) -> list[str]:
        return ["n", "validity_rate", "mean.rouge-l", "mean.bleu-4"]

    def check(self, options: Options, task: TaskInfo) -> None:
        if task.label_schema is None or not task.label_schema.text_keys():
            raise EvalError(f"{task.source or task.name}: eval plugin json_fields needs psy.label_schema with "
                            "free-text fields (a JSON Schema whose fields are \"type\": \"string\")")

    def paired_scores(self, items: list[dict[str, Any]]) -> dict[str, dict[str, float]] | None:
        return {"mean rouge-l": {it["id"]: it["mean_rouge_l"] for it in items}} if items else None

    def run(self, ctx: EvalContext) -> PluginResult:
        assert ctx.predictions is not None
        schema = ctx.label_schema
        if schema is None or not schema.text_keys():
            raise EvalError(f"json_fields: task {ctx.task.name!r} needs a psy.label_schema with free-text fields")
        opts: Options = ctx.options or Options()
        fields = schema.keys
        refs = []
        for s in ctx.samples:
            try:
                ref = json.loads(s.reference)
            except json.JSONDecodeError as e:
                raise EvalError(f"sample {s.id}: reference is not JSON: {e.msg}") from None
            if not isinstance(ref, dict) or any(f not in ref for f in fields):
                raise EvalError(f"sample {s.id}: reference lacks fields of {schema.path.name}")
            refs.append(ref)
        parsed = [schema.parse(p) for p in ctx.predictions]
        n = len(parsed)
        valid = sum(p.labels is not None for p in parsed)
        reasons = Counter(r for p in parsed if p.labels is None for r in dict.fromkeys(p.reasons))
        per_field: dict[str, dict[str, float]] = {}
        item_scores: list[dict[str, float]] = [{} for _ in parsed]
        for f in fields:
            hyps = [str(p.labels[f]) if p.labels is not None else "" for p in parsed]
            m = text_score(hyps, [str(r[f]) for r in refs], opts.lang)
            per_field[f] = {k: m[k] for k in METRICS}
            for i, row in enumerate(m["per_item"]):
                item_scores[i][f] = row["rouge-l"]
        mean = {k: statistics.fmean(per_field[f][k] for f in fields) if fields else 0.0 for k in METRICS}
        metrics = {"n": n, "valid": valid, "validity_rate": valid / n if n else 0.0,
                   "failure_reasons": dict(reasons.most_common()), "fields": per_field, "mean": mean}
        lines = ["## json_fields",
                 f"n = {n}; valid JSON answers: {valid} ({metrics['validity_rate']:.2%}); an invalid answer scores 0 "
                 "on every field.",
                 md_table(["field", *METRICS], [[f, *(per_field[f][k] for k in METRICS)] for f in fields]
                          + [["(mean)", *(mean[k] for k in METRICS)]])]
        if reasons:
            lines.append(md_table(["failure reason", "answers"], list(reasons.most_common())))
        items = [{"id": s.id, "prediction": p, "valid": q.labels is not None, "reasons": q.reasons,
                  "rouge_l": sc, "mean_rouge_l": statistics.fmean(sc.values()) if sc else 0.0}
                 for s, p, q, sc in zip(ctx.samples, ctx.predictions, parsed, item_scores, strict=True)]
        return PluginResult(metrics, "\n\n".join(lines), [], items)
