"""`generation`: reference-based metrics for free-text replies (psydt, cpsycoun, psyqa, es).

ROUGE-1/2/L F1 (rouge-chinese) and BLEU-4 (nltk, smoothing method 3) on jieba-segmented text for
Chinese and lower-cased whitespace tokens for English; distinct-1/2 over all predictions; length
statistics in characters. Sentence scores are averaged over samples; an empty prediction scores 0.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from typing import Any, Literal

from psyfactory.plugins.base import (
    EvalContext,
    EvalPlugin,
    PluginOptions,
    PluginResult,
    md_table,
    pyplot,
    save_fig,
)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


class Options(PluginOptions):
    lang: Literal["auto", "zh", "en"] = "auto"  # tokenisation: jieba for zh, whitespace for en, auto per text


def tokenize(text: str, lang: str = "auto") -> list[str]:
    """jieba words for Chinese (also when ``lang="auto"`` and the text has CJK characters),
    otherwise lower-cased whitespace tokens."""
    if lang == "zh" or (lang == "auto" and _CJK.search(text)):
        import jieba

        jieba.setLogLevel(60)
        return [w for w in jieba.lcut(text) if w.strip()]
    return text.lower().split()


def _rouge(hyp: list[str], ref: list[str]) -> dict[str, float]:
    zero = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    if not hyp or not ref:
        return zero
    from rouge_chinese import Rouge

    # rouge-chinese splits on spaces and treats "." specially; map tokens to safe ids
    vocab: dict[str, str] = {}
    enc = [[vocab.setdefault(t, f"t{len(vocab)}") for t in seq] for seq in (hyp, ref)]
    s = Rouge().get_scores(" ".join(enc[0]), " ".join(enc[1]))[0]
    return {k: float(s[k]["f"]) for k in zero}


def _bleu4(hyp: list[str], ref: list[str]) -> float:
    if not hyp or not ref:
        return 0.0
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return float(sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method3))


def distinct_n(token_lists: Sequence[Sequence[str]], n: int) -> float:
    """Unique n-grams / total n-grams over all predictions (0 when there is none)."""
    grams = [tuple(t[i : i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _length_stats(lengths: Sequence[int]) -> dict[str, float]:
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "min": 0, "max": 0}
    return {"mean": statistics.fmean(lengths), "median": float(statistics.median(lengths)),
            "min": min(lengths), "max": max(lengths)}


def score(predictions: Sequence[str], references: Sequence[str], lang: str = "auto") -> dict[str, Any]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    hyps = [tokenize(p, lang) for p in predictions]
    refs = [tokenize(r, lang) for r in references]
    per = [{**_rouge(h, r), "bleu-4": _bleu4(h, r)} for h, r in zip(hyps, refs, strict=True)]
    n = len(per)

    def mean(key: str) -> float:
        return statistics.fmean(p[key] for p in per) if per else 0.0

    return {
        "n": n,
        "rouge-1": mean("rouge-1"),
        "rouge-2": mean("rouge-2"),
        "rouge-l": mean("rouge-l"),
        "bleu-4": mean("bleu-4"),
        "distinct-1": distinct_n(hyps, 1),
        "distinct-2": distinct_n(hyps, 2),
        "empty": sum(1 for p in predictions if not p.strip()),
        "pred_chars": _length_stats([len(p) for p in predictions]),
        "ref_chars": _length_stats([len(r) for r in references]),
        "per_item": per,
    }


class GenerationPlugin(EvalPlugin):
    name = "generation"
    Options = Options

    def paired_scores(self, items: list[dict[str, Any]]) -> dict[str, dict[str, float]] | None:
        return {m: {it["id"]: float(it[m]) for it in items} for m in ("rouge-l", "bleu-4")} if items else None

    headline = ("n", "rouge-1", "rouge-2", "rouge-l", "bleu-4", "distinct-2")

    def run(self, ctx: EvalContext) -> PluginResult:
        assert ctx.predictions is not None
        m = score(ctx.predictions, [s.reference for s in ctx.samples], (ctx.options or Options()).lang)
        per = m.pop("per_item")
        plot = "generation_lengths.png"
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist([[len(p) for p in ctx.predictions], [len(s.reference) for s in ctx.samples]],
                bins=20, label=["prediction", "reference"])
        ax.set_xlabel("characters")
        ax.set_ylabel("samples")
        ax.set_title(f"{ctx.task.name}: reply lengths")
        ax.legend()
        save_fig(fig, ctx.out_dir / plot)
        pc, rc = m["pred_chars"], m["ref_chars"]
        report = "\n\n".join([
            "## generation",
            f"n = {m['n']}; empty predictions: {m['empty']}.",
            md_table(["ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU-4", "distinct-1", "distinct-2"],
                     [[m["rouge-1"], m["rouge-2"], m["rouge-l"], m["bleu-4"], m["distinct-1"], m["distinct-2"]]]),
            md_table(["length (chars)", "mean", "median", "min", "max"],
                     [["prediction", pc["mean"], pc["median"], pc["min"], pc["max"]],
                      ["reference", rc["mean"], rc["median"], rc["min"], rc["max"]]]),
            f"![length histogram]({plot})",
        ])
        items = [{"id": s.id, "prediction": p, **scores}
                 for s, p, scores in zip(ctx.samples, ctx.predictions, per, strict=True)]
        return PluginResult(m, report, [plot], items)
