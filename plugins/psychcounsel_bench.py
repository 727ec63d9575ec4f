"""`psychcounsel_bench`: PsychCounsel-Bench multiple choice (counselor-exam items).

The benchmark file is a JSON array of ``{id, question, options: {a: ..., ...}, answer}``; items have
2, 4 or 5 options and each is scored over the options it actually has (keys sorted). Scoring modes:

* ``loglik`` (default): one forward pass per prompt; the option whose letter has the highest
  log-probability as the first answer token wins. Nothing is parsed, so nothing can be unparsed.
* ``generate``: greedy generation, strict letter extraction (:func:`parse_letter`); an answer that
  is not one of the item's letters is counted wrong and reported as unparsed.

Prompt formats are data files (``evaluation/psychcounsel/prompts/<name>.yaml``); accuracy is reported
with a 95% Wilson interval per format. Base vs tuned (paired McNemar) is done by ``psyfactory compare``
from the per-item records this plugin writes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from plugins.base import (
    EvalContext,
    EvalPlugin,
    PluginOptions,
    PluginResult,
    md_table,
    pyplot,
    save_fig,
    wilson_ci,
)
from psyfactory.core.errors import EvalError
from psyfactory.core.labels import strip_think_trimmed

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "evaluation" / "psychcounsel" / "prompts"
DEFAULT_FORMATS = ("professional", "bare", "chat")
GENERATE_MAX_NEW_TOKENS = 50  # as in earlier work on this benchmark


class Options(PluginOptions):
    bench_file: str | None = None  # JSON array of items; `{raw_dir}` = $PSY_RAW_DIR or ./raw
    scoring: Literal["loglik", "generate"] = "loglik"
    formats: list[str] = list(DEFAULT_FORMATS)  # prompt format names or YAML paths; the first is the headline
    max_new_tokens: int = GENERATE_MAX_NEW_TOKENS  # generate scoring only


@dataclass(frozen=True)
class BenchItem:
    id: str
    question: str
    options: tuple[tuple[str, str], ...]  # (lowercase key, text), sorted by key
    answer: str  # lowercase key

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.options]


def load_bench(path: str | Path, limit: int | None = None) -> list[BenchItem]:
    """Read and validate the benchmark file; errors name the file, the item index and the field."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"PsychCounsel-Bench file not found: {path} (set psy.eval_options "
                        "psychcounsel_bench.bench_file or --bench-file)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, list):
        raise EvalError(f"{path}: expected a JSON array of items, got {type(data).__name__}")
    items: list[BenchItem] = []
    for i, rec in enumerate(data):
        where = f"{path}: item #{i}"
        if not isinstance(rec, dict):
            raise EvalError(f"{where}: expected an object")
        for key, typ in (("question", str), ("options", dict), ("answer", str)):
            if not isinstance(rec.get(key), typ):
                raise EvalError(f"{where} (id={rec.get('id')!r}): field {key!r} must be a {typ.__name__}")
        opts = {str(k).strip().lower(): v for k, v in rec["options"].items()}
        if len(opts) < 2 or any(not re.fullmatch(r"[a-z]", k) or not isinstance(v, str) for k, v in opts.items()):
            raise EvalError(f"{where} (id={rec.get('id')!r}): field 'options' needs >= 2 single-letter keys "
                             "with string values")
        answer = rec["answer"].strip().lower()
        if answer not in opts:
            raise EvalError(f"{where} (id={rec.get('id')!r}): field 'answer' {rec['answer']!r} is not an option key")
        items.append(BenchItem(str(rec.get("id", i)), rec["question"].strip(), tuple(sorted(opts.items())), answer))
    return items[:limit] if limit else items


@dataclass(frozen=True)
class PromptFormat:
    name: str
    user: str
    system: str | None = None
    description: str = ""
    option_line: str = "{letter}. {text}"
    letter_case: str = "upper"

    def letter(self, key: str) -> str:
        return key.upper() if self.letter_case == "upper" else key.lower()

    def conversation(self, item: BenchItem) -> list[dict[str, str]]:
        options = "\n".join(self.option_line.replace("{letter}", self.letter(k)).replace("{text}", t)
                            for k, t in item.options)
        user = self.user.replace("{question}", item.question).replace("{options}", options)
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return [*msgs, {"role": "user", "content": user}]


def available_formats() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))


def load_format(name_or_path: str) -> PromptFormat:
    """A prompt format by name (a file in ``evaluation/psychcounsel/prompts/``) or by YAML path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = PROMPTS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise EvalError(f"unknown prompt format {name_or_path!r}; known: {', '.join(available_formats())} "
                           f"(or pass a path to a YAML file)")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    allowed = {"name", "user", "system", "description", "option_line", "letter_case"}
    if not isinstance(raw, dict) or set(raw) - allowed:
        raise EvalError(f"{path}: unknown fields {sorted(set(raw) - allowed) if isinstance(raw, dict) else raw!r}; "
                         f"allowed: {sorted(allowed)}")
    if not isinstance(raw.get("user"), str) or "{options}" not in raw["user"]:
        raise EvalError(f"{path}: field 'user' must be a string containing the placeholder {{options}}")
    if raw.get("letter_case", "upper") not in ("upper", "lower"):
        raise EvalError(f"{path}: field 'letter_case' must be 'upper' or 'lower'")
    raw.setdefault("name", path.stem)
    return PromptFormat(**raw)


_LETTER = re.compile(
    r"""^\s*(?:(?:the\s+)?(?:correct\s+)?(?:answer|option)(?:\s+is)?|答案(?:是|为)?)?\s*[:：]?\s*
        ([(\[（*]*)([A-Za-z])([)\]）*]*)(.*)$""",
    re.VERBOSE | re.IGNORECASE | re.DOTALL,
)


def parse_letter(text: str, keys: Sequence[str]) -> str | None:
    """Strict extraction: the reply must START with an option letter (optionally after "Answer:" /
    "The answer is" / "答案：", bracketed or bold) that ends the reply, or is followed by punctuation,
    a closing bracket, a line break or a dash. "A patient ..." is prose, not an answer. The letter must
    be one of the item's ``keys`` (lowercase). Returns the lowercase key, or None (unparsed)."""
    m = _LETTER.match(text)
    if not m:
        return None
    _, letter, close, rest = m.groups()
    ok = (not rest.strip() or bool(close) or rest[0] in ".．:：、,，;；" or rest[0] in "\r\n"
          or bool(re.match(r"\s+[-–—]", rest)))
    key = letter.lower()
    return key if ok and key in keys else None


def score(items: Sequence[BenchItem], chosen: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy (95% Wilson CI), unparsed count, and accuracy by number of options."""
    if len(items) != len(chosen):
        raise ValueError(f"{len(chosen)} answers for {len(items)} items")
    correct = [c == it.answer for it, c in zip(items, chosen, strict=True)]
    n, k = len(items), sum(correct)
    lo, hi = wilson_ci(k, n)
    by_n: dict[str, dict[str, float]] = {}
    for it, ok in zip(items, correct, strict=True):
        d = by_n.setdefault(str(len(it.options)), {"n": 0, "correct": 0})
        d["n"] += 1
        d["correct"] += ok
    for d in by_n.values():
        d["accuracy"] = d["correct"] / d["n"]
    return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi],
            "unparsed": sum(c is None for c in chosen), "by_n_options": dict(sorted(by_n.items()))}


def choose_by_loglik(items: Sequence[BenchItem], fmt: PromptFormat, backend: Any) -> list[str]:
    letters = [[fmt.letter(k) for k in it.keys] for it in items]
    logps = backend.option_logprobs([fmt.conversation(it) for it in items], letters)
    return [it.keys[max(range(len(lp)), key=lp.__getitem__)] for it, lp in zip(items, logps, strict=True)]


def choose_by_generation(items: Sequence[BenchItem], fmt: PromptFormat, backend: Any,
                         max_new_tokens: int = GENERATE_MAX_NEW_TOKENS) -> tuple[list[str | None], list[str], int]:
    raw = backend.generate([fmt.conversation(it) for it in items], max_new_tokens=max_new_tokens)
    stripped = [strip_think_trimmed(r) for r in raw]
    chosen = [parse_letter(text, it.keys) for (text, _), it in zip(stripped, items, strict=True)]
    return chosen, [t for t, _ in stripped], sum(had for _, had in stripped)


class PsychCounselBenchPlugin(EvalPlugin):
    name = "psychcounsel_bench"
    needs_predictions = False  # brings its own items
    needs_backend = True  # and queries the model itself
    Options = Options
    headline = ("n_items", "primary.accuracy", "primary.unparsed")

    def needs_loglik(self, options: Options) -> bool:
        return options.scoring == "loglik"

    def check(self, options: Options) -> None:
        if not options.bench_file:
            raise EvalError("psychcounsel_bench: option 'bench_file' is not set (psy.eval_options.psychcounsel_bench."
                            "bench_file or --bench-file)")
        load_bench(options.bench_file)
        for name in options.formats:
            load_format(name)
        if not options.formats:
            raise EvalError("psychcounsel_bench: option 'formats' is empty")

    def headline_keys(self, metrics: dict[str, Any]) -> list[str]:
        return [*self.headline, *(f"formats.{f}.accuracy" for f in metrics.get("formats", {}))]

    def paired(self, items: list[dict[str, Any]]) -> dict[str, dict[str, bool]] | None:
        out: dict[str, dict[str, bool]] = {}
        for it in items:
            out.setdefault(it["format"], {})[it["id"]] = bool(it["correct"])
        return out or None

    def run(self, ctx: EvalContext) -> PluginResult:
        opts: Options = ctx.options or Options()
        if ctx.backend is None:
            raise ValueError("psychcounsel_bench needs a model backend")
        self.check(opts)
        items = load_bench(opts.bench_file, ctx.limit)  # type: ignore[arg-type]
        mode = opts.scoring
        formats = [load_format(name) for name in opts.formats]
        per_format: dict[str, Any] = {}
        records: list[dict[str, Any]] = []
        for fmt in formats:
            t0 = time.perf_counter()
            outputs: list[str] | None = None
            think = 0
            if mode == "loglik":
                chosen: list[str | None] = list(choose_by_loglik(items, fmt, ctx.backend))
            else:
                chosen, outputs, think = choose_by_generation(items, fmt, ctx.backend, opts.max_new_tokens)
            m = score(items, chosen)
            m.update(seconds=time.perf_counter() - t0, think_blocks=think)
            per_format[fmt.name] = m
            for i, (it, c) in enumerate(zip(items, chosen, strict=True)):
                rec = {"id": it.id, "format": fmt.name, "answer": it.answer, "chosen": c, "correct": c == it.answer}
                if outputs is not None:
                    rec["output"] = outputs[i]
                records.append(rec)
        primary = formats[0].name
        metrics = {"scoring": mode, "bench_file": str(opts.bench_file), "n_items": len(items),
                   "formats": per_format, "primary": {"format": primary, **per_format[primary]}}
        plot = "psychcounsel_accuracy.png"
        self._plot(per_format, ctx.out_dir / plot, mode)
        rows = [(name, m["n"], m["accuracy"], f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]", m["unparsed"],
                 m["think_blocks"], f"{m['seconds']:.1f}") for name, m in per_format.items()]
        report = "\n\n".join([
            "## psychcounsel_bench",
            f"{len(items)} items from `{Path(opts.bench_file).name}`, scoring **{mode}**"
            + (" (option-letter log-probabilities, nothing parsed)." if mode == "loglik"
               else f" (greedy, max {opts.max_new_tokens} new tokens, "
                    "strict letter extraction; unparsed answers count as wrong)."),
            md_table(["prompt format", "n", "accuracy", "95% CI", "unparsed", "<think> blocks", "seconds"], rows),
            f"![accuracy per prompt format]({plot})",
        ])
        return PluginResult(metrics, report, [plot], records)

    @staticmethod
    def _plot(per_format: dict[str, Any], path: Path, mode: str) -> None:
        plt = pyplot()
        names = list(per_format)
        acc = [per_format[n]["accuracy"] for n in names]
        err = [[a - per_format[n]["ci95"][0] for n, a in zip(names, acc, strict=True)],
               [per_format[n]["ci95"][1] - a for n, a in zip(names, acc, strict=True)]]
        fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(names), 3.5))
        ax.bar(names, acc, yerr=err, capsize=4, color="#4c72b0")
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy (95% CI)")
        ax.set_title(f"PsychCounsel-Bench ({mode})")
        save_fig(fig, path)
