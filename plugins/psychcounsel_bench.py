"""`psychcounsel_bench`: PsychCounsel-Bench multiple choice (counselor-exam items), with bias diagnostics.

The benchmark file is a JSON array of ``{id, question, options: {a: ..., ...}, answer}``; items have
2, 4 or 5 options and each is scored over the options it actually has (keys sorted). Denominator
(``denominator``): ``scorable`` (default) lists items with an empty question or fewer than two options
by id and excludes them; ``all`` asks every item of the file and counts it, as seed 004's author did
(the empty questions are then reported apart as well). Scoring:

* ``loglik`` (default): one forward pass per prompt; the option whose letter has the highest
  log-probability as the first answer token wins. Nothing is parsed, so nothing can be unparsed.
* ``generate``: generation with the task's ``psy.generation`` (greedy, or sampled), then letter extraction
  three ways, all reported; ``extractor`` names the one behind ``accuracy``: **strict** (:func:`parse_letter`:
  the reply starts with the letter) and **lenient** (:func:`parse_letter_lenient`: the first letter stated
  as the answer anywhere), the project's, both on the reply with any think block removed and only the
  item's own letters counting; **seed004** (:func:`extract_seed004`), seed 004's author's rule on the
  reply as generated (think block included): known answer prefixes stripped, then the first of a
  leading letter, ``答案是X``, ``选择X``, a standalone letter, the first character, any of A-E, compared
  lower-case with the gold key. Unparsed answers count as wrong and are reported. Each item's record
  holds the prompt as the model got it, the generation, the letter of each extractor and the gold key.

Prompt formats are data files (``evaluation/psychcounsel/prompts/<name>.yaml``); a format is rendered
through the model's chat template (``render: chat``) or fed as a plain prompt (``render: plain``), and
may override keys of the task's generation spec for itself (``generation: {thinking: template}``).
Seed 004's three formats are shipped as its author's script builds them (``seed004-exact-*``: format 3
keeps the template's own thinking) and as the seed document's worked examples show them (``seed004-*``).

Bias diagnostics per format: the distribution of predicted letters, accuracy by number of options,
the score of always answering each letter, and a permutation-debiased accuracy: every item is asked
again under each cyclic shift of its options, and counts as correct when the majority of the shifts
(or, for loglik, the mean option probability) picks the right text; ties share the credit, so a
model that always says "A" scores exactly chance. Its cost (k queries per k-option item) is reported.
Base vs tuned (paired McNemar per format) is done by ``psyfactory compare`` from the item records.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from psyfactory.core.backend import plain
from psyfactory.core.errors import EvalError
from psyfactory.core.generation import GenerationSpec
from psyfactory.core.labels import strip_think_trimmed
from psyfactory.core.paths import EVALUATION_DIR
from psyfactory.plugins.base import (
    EvalContext,
    EvalPlugin,
    PluginOptions,
    PluginResult,
    TaskInfo,
    md_table,
    pyplot,
    save_fig,
    wilson_ci,
)

PROMPTS_DIR = EVALUATION_DIR / "psychcounsel" / "prompts"
DEFAULT_FORMATS = ("seed004-professional", "seed004-simple", "seed004-chat")
LETTERS = "abcde"


EXTRACTORS = ("strict", "lenient", "seed004")


class Options(PluginOptions):
    bench_file: str | None = None  # JSON array of items; `{raw_dir}` = $PSY_RAW_DIR or ./raw
    scoring: Literal["loglik", "generate"] = "loglik"
    formats: list[str] = list(DEFAULT_FORMATS)  # prompt format names or YAML paths; the first is the headline
    debias: bool = True  # the permutation-debiased accuracy (k more queries per k-option item)
    extractor: Literal["strict", "lenient", "seed004"] = "strict"  # generate: the extraction behind `accuracy`
    denominator: Literal["scorable", "all"] = "scorable"  # all: every item of the file is asked and counts


@dataclass(frozen=True)
class BenchItem:
    id: str
    question: str
    options: tuple[tuple[str, str], ...]  # (lowercase key, text), sorted by key
    answer: str  # lowercase key

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.options]

    def shifted(self, s: int) -> tuple[BenchItem, list[str]]:
        """The item with its option texts rotated by `s` (letters stay a, b, ...), and for each new
        letter the original key whose text it now shows."""
        keys = self.keys
        origin = [keys[(j + s) % len(keys)] for j in range(len(keys))]
        texts = dict(self.options)
        rotated = tuple((k, texts[o]) for k, o in zip(keys, origin, strict=True))
        return replace(self, options=rotated, answer=keys[origin.index(self.answer)]), origin


@dataclass(frozen=True)
class Bench:
    items: list[BenchItem]
    excluded: list[dict[str, str]]  # {id, reason}: not scored
    empty: list[str] = field(default_factory=list)  # ids of the items with an empty question that ARE scored

    @property
    def size(self) -> int:
        """Items read from the file (scored + excluded)."""
        return len(self.items) + len(self.excluded)


def load_bench(path: str | Path, limit: int | None = None, *, keep_all: bool = False) -> Bench:
    """Read and validate the benchmark file; errors name the file, the item index and the field.
    Items with an empty question or fewer than two options are excluded and listed (not errors);
    with ``keep_all`` they are kept (and the empty questions listed in ``Bench.empty``), and every
    question is kept as the file writes it, as seed 004's author's script asked them."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"PsychCounsel-Bench file not found: {path} (set psy.eval_options "
                        "psychcounsel_bench.bench_file or --bench-file)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise EvalError(f"{path}: not UTF-8 (byte {e.start}); convert it, e.g. `iconv -f gbk -t utf-8`") from None
    if not isinstance(data, list):
        raise EvalError(f"{path}: expected a JSON array of items, got {type(data).__name__}")
    if not data:
        raise EvalError(f"{path}: the benchmark holds no items")
    items: list[BenchItem] = []
    excluded: list[dict[str, str]] = []
    empty: list[str] = []
    for i, rec in enumerate(data[:limit] if limit else data):
        where = f"{path}: item #{i}"
        if not isinstance(rec, dict):
            raise EvalError(f"{where}: expected an object")
        for key, typ in (("question", str), ("options", dict), ("answer", str)):
            if not isinstance(rec.get(key), typ):
                raise EvalError(f"{where} (id={rec.get('id')!r}): field {key!r} must be a {typ.__name__}")
        opts = {str(k).strip().lower(): v for k, v in rec["options"].items()}
        if any(not re.fullmatch(r"[a-z]", k) or not isinstance(v, str) for k, v in opts.items()):
            raise EvalError(f"{where} (id={rec.get('id')!r}): field 'options' needs single-letter keys with string values")
        item_id = str(rec.get("id", i))
        answer = rec["answer"].strip().lower()
        if not rec["question"].strip():
            if not keep_all:
                excluded.append({"id": item_id, "reason": "empty question"})
                continue
            empty.append(item_id)
        if len(opts) < 2 and not keep_all:
            excluded.append({"id": item_id, "reason": f"{len(opts)} option(s)"})
            continue
        if answer not in opts:
            raise EvalError(f"{where} (id={rec.get('id')!r}): field 'answer' {rec['answer']!r} is not an option key")
        question = rec["question"] if keep_all else rec["question"].strip()
        items.append(BenchItem(item_id, question, tuple(sorted(opts.items())), answer))
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.id in seen:  # paired tests (compare) match items by id: two items of one id would mix
            raise EvalError(f"{path}: item #{i} repeats id {it.id!r} of item #{seen[it.id]}; ids must be unique")
        seen[it.id] = i
    if not items:
        raise EvalError(f"{path}: no item can be scored ({len(excluded)} excluded: empty question or < 2 options)")
    return Bench(items, excluded, empty)


@dataclass(frozen=True)
class PromptFormat:
    name: str
    user: str
    system: str | None = None
    description: str = ""
    option_line: str = "{letter}. {text}"
    letter_case: str = "upper"
    render: str = "chat"  # chat: through the model's chat template; plain: the text as it is
    generation: dict[str, Any] = field(default_factory=dict)  # keys of the task's psy.generation it overrides

    def spec(self, task: GenerationSpec) -> GenerationSpec:
        """The task's generation spec with this format's own keys (and its rendering) applied."""
        return task.merged({**self.generation, "prompt": self.render})

    def letter(self, key: str) -> str:
        return key.upper() if self.letter_case == "upper" else key.lower()

    def text(self, item: BenchItem) -> str:
        options = "\n".join(self.option_line.replace("{letter}", self.letter(k)).replace("{text}", t)
                            for k, t in item.options)
        return self.user.replace("{question}", item.question).replace("{options}", options)

    def conversation(self, item: BenchItem) -> list[dict[str, str]]:
        if self.render == "plain":
            return plain(f"{self.system}\n{self.text(item)}" if self.system else self.text(item))
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return [*msgs, {"role": "user", "content": self.text(item)}]


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
    allowed = {"name", "user", "system", "description", "option_line", "letter_case", "render", "generation"}
    if not isinstance(raw, dict) or set(raw) - allowed:
        raise EvalError(f"{path}: unknown fields {sorted(set(raw) - allowed) if isinstance(raw, dict) else raw!r}; "
                        f"allowed: {sorted(allowed)}")
    if not isinstance(raw.get("user"), str) or "{options}" not in raw["user"]:
        raise EvalError(f"{path}: field 'user' must be a string containing the placeholder {{options}}")
    if raw.get("letter_case", "upper") not in ("upper", "lower"):
        raise EvalError(f"{path}: field 'letter_case' must be 'upper' or 'lower'")
    if raw.get("render", "chat") not in ("chat", "plain"):
        raise EvalError(f"{path}: field 'render' must be 'chat' or 'plain'")
    if not isinstance(raw.get("generation", {}), dict):
        raise EvalError(f"{path}: field 'generation' must be a mapping of psy.generation keys")
    raw.setdefault("name", path.stem)
    fmt = PromptFormat(**raw)
    try:
        fmt.spec(GenerationSpec())
    except ValueError as e:  # pydantic: an unknown or invalid generation key
        raise EvalError(f"{path}: field 'generation': {' '.join(str(e).split())[:300]}") from None
    return fmt


_LETTER = re.compile(
    r"""^\s*(?:(?:the\s+)?(?:correct\s+)?(?:answer|option)(?:\s+is)?|答案(?:是|为)?)?\s*[:：]?\s*
        ([(\[（*]*)([A-Za-z])([)\]）*]*)(.*)$""",
    re.VERBOSE | re.IGNORECASE | re.DOTALL,
)
# lenient: the letter stated as the answer somewhere ("The answer is (C)", "I choose B", "答案是C",
# "选B"), else a capital letter standing alone before punctuation or the end ("... so it is C."), not
# the article in "A patient ...".
_STATED = re.compile(r"(?:answer(?:\s+is)?|option|choice|choose|select|pick|答案(?:是|为)?|选(?:择)?)\s*[:：]?\s*"
                     r"[(\[（*]*([A-Ea-e])(?![A-Za-z])", re.IGNORECASE)
_LONE = re.compile(r"(?<![A-Za-z])([A-E])(?=[)）\]*]*\s*(?:$|[.,;:!?。，；：！？]))")


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


def parse_letter_lenient(text: str, keys: Sequence[str]) -> str | None:
    """Lenient extraction: the strict answer; else the first letter stated as the answer ("The
    answer is C", "I'd choose (B)", "答案是C", "选B"); else the first capital letter A-E that stands
    alone ("Because ..., C."). Only letters among the item's ``keys`` count."""
    strict = parse_letter(text, keys)
    if strict is not None:
        return strict
    for pattern in (_STATED, _LONE):
        for m in pattern.finditer(text):
            key = m.group(1).lower()
            if key in keys:
                return key
    return None


# Seed 004's author's rule (their public lora/benchmark/model_original.py; docs/evaluation.md, seed004-exact):
# answer prefixes removed in this order (each at most once), then the first pattern that matches.
SEED004_PREFIXES = ("回答：", "答案是", "选择", "我认为是", "选项", "答：", "answer:", "answer is")
SEED004_PATTERNS = (
    re.compile(r"^([a-e])", re.IGNORECASE),  # a letter at the very start ("B. 因为…", and the B of "Based on")
    re.compile(r"答案是\s*([a-e])", re.IGNORECASE),
    re.compile(r"选择\s*([a-e])", re.IGNORECASE),
    re.compile(r"\b([a-e])\b", re.IGNORECASE),  # a standalone letter anywhere (the article "a" too)
)


def extract_seed004(text: str) -> str | None:
    """Seed 004's author's extraction, on the reply as generated (a think block is not removed): the
    text stripped; each known answer prefix it starts with removed (case-insensitive, in the order of
    SEED004_PREFIXES); then the first match of a leading letter A-E, `答案是` + letter, `选择` + letter, a
    standalone letter A-E (Unicode word boundaries, so `选B` has none); else the first character if it is
    one of a-e. Returns the lowercase letter, which need not be one of the item's options, or None."""
    text = (text or "").strip()
    for prefix in SEED004_PREFIXES:
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix):].strip()
    for pattern in SEED004_PATTERNS:
        m = pattern.search(text)
        if m:
            return m.group(1).lower()
    return text[0].lower() if text and text[0].lower() in LETTERS else None


def extract(name: str, raw: str, stripped: str, keys: Sequence[str]) -> str | None:
    """The letter extractor `name` on one reply: the project's on the think-stripped text, the seed's
    author's on the text as generated."""
    if name == "seed004":
        return extract_seed004(raw)
    return parse_letter(stripped, keys) if name == "strict" else parse_letter_lenient(stripped, keys)


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


def bias(items: Sequence[BenchItem], chosen: Sequence[str | None]) -> dict[str, Any]:
    """Predicted-letter distribution, gold-letter distribution, the accuracy of always answering each
    letter (an item without that letter counts as wrong), and chance (mean of 1/k)."""
    n = len(items)
    always = {L.upper(): (sum(it.answer == L for it in items) / n if n else 0.0) for L in LETTERS}
    best = max(always, key=always.__getitem__) if n else "A"
    return {
        "predicted": {L.upper(): sum(c == L for c in chosen) for L in LETTERS} | {"unparsed": sum(c is None for c in chosen)},
        "gold": {L.upper(): sum(it.answer == L for it in items) for L in LETTERS},
        "always_letter": always,
        "best_constant": {"letter": best, "accuracy": always[best]},
        "chance": sum(1 / len(it.options) for it in items) / n if n else 0.0,
    }


def _query_loglik(items: Sequence[BenchItem], fmt: PromptFormat, backend: Any,
                  spec: GenerationSpec) -> list[list[float]]:
    letters = [[fmt.letter(k) for k in it.keys] for it in items]
    return backend.option_logprobs([fmt.conversation(it) for it in items], letters, spec=spec)


def choose_by_loglik(items: Sequence[BenchItem], fmt: PromptFormat, backend: Any, spec: GenerationSpec) -> list[str]:
    logps = _query_loglik(items, fmt, backend, spec)
    return [it.keys[max(range(len(lp)), key=lp.__getitem__)] for it, lp in zip(items, logps, strict=True)]


@dataclass(frozen=True)
class Generated:
    """The replies of one format: as generated, think-stripped, and each extractor's letters."""

    raw: list[str]
    outputs: list[str]  # think block removed, trimmed
    think_blocks: int
    letters: dict[str, list[str | None]]  # extractor -> one letter (or None) per item


def choose_by_generation(items: Sequence[BenchItem], fmt: PromptFormat, backend: Any, spec: GenerationSpec,
                         ) -> Generated:
    """Generate one reply per item and read its letter with every extractor."""
    raw = backend.generate([fmt.conversation(it) for it in items], spec)
    stripped = [strip_think_trimmed(r) for r in raw]
    letters = {name: [extract(name, r, t, it.keys) for r, (t, _), it in zip(raw, stripped, items, strict=True)]
               for name in EXTRACTORS}
    return Generated(list(raw), [t for t, _ in stripped], sum(had for _, had in stripped), letters)


def rendered_prompt(backend: Any, conversation: list[dict[str, str]], spec: GenerationSpec) -> str | list[dict[str, str]]:
    """The prompt text exactly as the backend feeds it to the model (chat template applied), when the
    backend can say; else the conversation itself."""
    render = getattr(backend, "render", None) or getattr(backend, "prompt", None)
    return render(conversation, spec) if callable(render) else conversation


def _credit(votes: dict[str, float], answer: str) -> float:
    """1 when the answer alone has the most votes, 1/t when it ties with t-1 others, else 0."""
    top = max(votes.values())
    tied = [k for k, v in votes.items() if math.isclose(v, top)]
    return 1 / len(tied) if answer in tied else 0.0


def debiased(items: Sequence[BenchItem], fmt: PromptFormat, backend: Any, mode: str,
             spec: GenerationSpec, extractor: str = "strict") -> dict[str, Any]:
    """Every item under every cyclic shift of its options; per item the credit of the majority of the
    shifts (and, for loglik, of the mean option probability)."""
    t0 = time.perf_counter()
    queries: list[tuple[int, BenchItem, list[str]]] = []
    for i, it in enumerate(items):
        for s in range(len(it.keys)):
            shifted, origin = it.shifted(s)
            queries.append((i, shifted, origin))
    votes: list[dict[str, float]] = [{k: 0.0 for k in it.keys} for it in items]
    probs: list[dict[str, float]] = [{k: 0.0 for k in it.keys} for it in items]
    shifted_items = [q[1] for q in queries]
    if mode == "loglik":
        for (i, _, origin), lp in zip(queries, _query_loglik(shifted_items, fmt, backend, spec), strict=True):
            m = max(lp)
            p = [math.exp(x - m) for x in lp]
            total = sum(p)
            votes[i][origin[max(range(len(lp)), key=lp.__getitem__)]] += 1
            for j, key in enumerate(origin):
                probs[i][key] += p[j] / total / len(origin)
    else:
        chosen = choose_by_generation(shifted_items, fmt, backend, spec).letters[extractor]
        for (i, shifted, origin), c in zip(queries, chosen, strict=True):
            if c is not None and c in shifted.keys:  # a letter of the shifted item; origin: whose text it showed
                votes[i][origin[items[i].keys.index(c)]] += 1
    majority = [_credit(v, it.answer) for v, it in zip(votes, items, strict=True)]
    out: dict[str, Any] = {"majority_accuracy": sum(majority) / len(items) if items else 0.0,
                           "queries": len(queries), "seconds": time.perf_counter() - t0, "per_item": majority}
    if mode == "loglik":
        mean_prob = [_credit(p, it.answer) for p, it in zip(probs, items, strict=True)]
        out["mean_prob_accuracy"] = sum(mean_prob) / len(items) if items else 0.0
    return out


class PsychCounselBenchPlugin(EvalPlugin):
    name = "psychcounsel_bench"
    uses_samples = False  # brings its own items
    needs_backend = True  # and queries the model itself
    Options = Options
    headline = ("n_items", "primary.accuracy", "primary.unparsed", "primary.debiased.majority_accuracy",
                "primary.bias.best_constant.accuracy")

    def needs_generations(self, options: Options) -> bool:
        return False

    def needs_loglik(self, options: Options) -> bool:
        return options.scoring == "loglik"

    def check(self, options: Options, task: TaskInfo) -> None:
        if not options.bench_file:
            raise EvalError(f"{task.source or task.name}: psychcounsel_bench: option 'bench_file' is not set "
                            "(ARGS=psy.eval_options.psychcounsel_bench.bench_file=PATH)")
        load_bench(options.bench_file)
        if not options.formats:
            raise EvalError("psychcounsel_bench: option 'formats' is empty")
        for name in options.formats:
            load_format(name)

    def headline_keys(self, metrics: dict[str, Any]) -> list[str]:
        keys = [k for k in self.headline if not k.startswith("primary.debiased") or "debiased" in metrics.get("primary", {})]
        return [*keys, *(f"formats.{f}.accuracy" for f in metrics.get("formats", {}))]

    def paired(self, items: list[dict[str, Any]]) -> dict[str, dict[str, bool]] | None:
        out: dict[str, dict[str, bool]] = {}
        for it in items:
            out.setdefault(it["format"], {})[it["id"]] = bool(it["correct"])
        return out or None

    def run(self, ctx: EvalContext) -> PluginResult:
        opts: Options = ctx.options or Options()
        if ctx.backend is None:
            raise ValueError("psychcounsel_bench needs a model backend")
        self.check(opts, ctx.task)
        bench = load_bench(opts.bench_file, ctx.limit, keep_all=opts.denominator == "all")  # type: ignore[arg-type]
        items, mode = bench.items, opts.scoring
        empty = set(bench.empty)
        formats = [load_format(name) for name in opts.formats]
        per_format: dict[str, Any] = {}
        records: list[dict[str, Any]] = []
        for fmt in formats:
            spec = fmt.spec(ctx.generation)
            t0 = time.perf_counter()
            gen: Generated | None = None
            if mode == "loglik":
                chosen: list[str | None] = list(choose_by_loglik(items, fmt, ctx.backend, spec))
            else:
                gen = choose_by_generation(items, fmt, ctx.backend, spec)
                chosen = gen.letters[opts.extractor]
            m = score(items, chosen)
            m.update(seconds=time.perf_counter() - t0, think_blocks=gen.think_blocks if gen else 0, render=fmt.render,
                     generation=spec.model_dump(mode="json") if mode == "generate" else
                     {"thinking": spec.thinking, "prompt": spec.prompt})
            if gen is not None:
                m["extractor"] = opts.extractor
                m["extractors"] = {}
                for name, letters in gen.letters.items():
                    em = score(items, letters)
                    m["extractors"][name] = {k: em[k] for k in ("accuracy", "ci95", "unparsed", "correct", "n")}
                m["lenient"] = m["extractors"]["lenient"]
            if empty:
                hits = [c == it.answer for it, c in zip(items, chosen, strict=True) if it.id in empty]
                m["empty_questions"] = {"n": len(hits), "correct": sum(hits)}
            m["bias"] = bias(items, chosen)
            deb = debiased(items, fmt, ctx.backend, mode, spec, opts.extractor) if opts.debias else None
            if deb is not None:
                m["debiased"] = {k: v for k, v in deb.items() if k != "per_item"}
            per_format[fmt.name] = m
            for i, (it, c) in enumerate(zip(items, chosen, strict=True)):
                rec: dict[str, Any] = {"id": it.id, "format": fmt.name, "answer": it.answer, "n_options": len(it.keys),
                                       "chosen": c, "correct": c == it.answer}
                if it.id in empty:
                    rec["empty_question"] = True
                if gen is not None:
                    rec["prompt"] = rendered_prompt(ctx.backend, fmt.conversation(it), spec)
                    rec["generation"] = gen.raw[i]
                    rec["output"] = gen.outputs[i]
                    for name, letters in gen.letters.items():
                        rec[f"chosen_{name}"] = letters[i]
                        rec[f"correct_{name}"] = letters[i] == it.answer
                if deb is not None:
                    rec["debiased_credit"] = deb["per_item"][i]
                records.append(rec)
        primary = formats[0].name
        metrics = {"scoring": mode, "decoding": ctx.generation.decoding if mode == "generate" else None,
                   "extractor": opts.extractor if mode == "generate" else None, "denominator": opts.denominator,
                   "bench_file": str(opts.bench_file), "n_items": len(items), "excluded": bench.excluded,
                   "empty_questions": sorted(empty, key=lambda x: (len(x), x)),
                   "formats": per_format, "primary": {"format": primary, **per_format[primary]}}
        plot = "psychcounsel_accuracy.png"
        self._plot(per_format, ctx.out_dir / plot, mode)
        return PluginResult(metrics, self._report(metrics, ctx.generation, plot), [plot], records)

    @staticmethod
    def _report(metrics: dict[str, Any], gen: GenerationSpec, plot: str) -> str:
        per_format, mode = metrics["formats"], metrics["scoring"]
        decoding = (f"sampled: T={gen.temperature:g}, top-p {gen.top_p:g}, top-k {gen.top_k}, seed {gen.seed}"
                    if gen.sampled else "greedy")
        extractor = metrics.get("extractor") or "strict"
        others = [e for e in EXTRACTORS if e != extractor]
        how = (" (option-letter log-probabilities, nothing parsed)." if mode == "loglik" else
               f" ({decoding}, max {gen.max_new_tokens} new tokens; `accuracy` by the **{extractor}** letter "
               f"extraction, {' and '.join(others)} beside it; unparsed = wrong).")
        lines = ["## psychcounsel_bench",
                 f"{metrics['n_items']} items from `{Path(metrics['bench_file']).name}`, scoring **{mode}**{how}"]
        if metrics["excluded"]:
            lines.append(f"Excluded (not scored): {len(metrics['excluded'])} item(s): "
                         + ", ".join(f"id {e['id']} ({e['reason']})" for e in metrics["excluded"]) + ".")
        if metrics.get("empty_questions"):
            lines.append(f"Denominator: every item of the file ({metrics['n_items']}), as seed 004's author counted; "
                         f"{len(metrics['empty_questions'])} with an empty question (ids "
                         f"{', '.join(metrics['empty_questions'])}) are asked and scored too: "
                         + ", ".join(f"{name} {m['empty_questions']['correct']}/{m['empty_questions']['n']} right"
                                     for name, m in per_format.items()) + ".")
        head = ["prompt format", "render", "n", f"accuracy{f' ({extractor})' if mode == 'generate' else ''}",
                "95% CI", "unparsed"]
        if mode == "generate":
            head += [f"{e} acc. (unparsed)" for e in others]
        head += ["best constant", "debiased (majority)"] + (["debiased (mean p)"] if mode == "loglik" else [])
        head += ["chance", "seconds"]
        rows = []
        for name, m in per_format.items():
            row: list[Any] = [name, m["render"], m["n"], m["accuracy"], f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]",
                              m["unparsed"]]
            if mode == "generate":
                row += [f"{m['extractors'][e]['accuracy']:.4f} ({m['extractors'][e]['unparsed']})" for e in others]
            bc = m["bias"]["best_constant"]
            deb = m.get("debiased") or {}
            row += [f"{bc['accuracy']:.4f} (always {bc['letter']})", deb.get("majority_accuracy", "-")]
            if mode == "loglik":
                row.append(deb.get("mean_prob_accuracy", "-"))
            row += [m["bias"]["chance"], f"{m['seconds']:.1f}"]
            rows.append(row)
        lines.append(md_table(head, rows))
        letters = [L.upper() for L in LETTERS]
        dist = [[name, *(m["bias"]["predicted"][L] for L in letters), m["bias"]["predicted"]["unparsed"]]
                for name, m in per_format.items()]
        gold = next(iter(per_format.values()))["bias"]["gold"] if per_format else {}
        dist.append(["(gold answers)", *(gold.get(L, 0) for L in letters), "-"])
        lines.append("Predicted letters per format:\n\n" + md_table(["prompt format", *letters, "unparsed"], dist))
        for name, m in per_format.items():
            lo, hi = m["ci95"]
            bc = m["bias"]["best_constant"]
            if lo <= bc["accuracy"] <= hi:
                lines.append(f"> `{name}`: accuracy {m['accuracy']:.4f} is within its 95% CI of always answering "
                             f"{bc['letter']!r} ({bc['accuracy']:.4f}): no evidence the model knows more than that letter.")
        deb_cost = [m["debiased"] for m in per_format.values() if "debiased" in m]
        if deb_cost:
            lines.append(f"Debiasing asked every item once per cyclic shift of its options: "
                         f"{sum(d['queries'] for d in deb_cost)} extra queries, {sum(d['seconds'] for d in deb_cost):.1f}s.")
        by_n = sorted({k for m in per_format.values() for k in m["by_n_options"]})
        lines.append("Accuracy by number of options:\n\n" + md_table(
            ["prompt format", *(f"{k} options" for k in by_n)],
            [[name, *(f"{m['by_n_options'][k]['accuracy']:.4f} (n={m['by_n_options'][k]['n']})"
                      if k in m["by_n_options"] else "-" for k in by_n)] for name, m in per_format.items()]))
        lines.append(f"![accuracy per prompt format]({plot})")
        return "\n\n".join(lines)

    @staticmethod
    def _plot(per_format: dict[str, Any], path: Path, mode: str) -> None:
        plt = pyplot()
        names = list(per_format)
        acc = [per_format[n]["accuracy"] for n in names]
        err = [[a - per_format[n]["ci95"][0] for n, a in zip(names, acc, strict=True)],
               [per_format[n]["ci95"][1] - a for n, a in zip(names, acc, strict=True)]]
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(3 + 2.6 * len(names), 3.8))
        ax.bar(names, acc, yerr=err, capsize=4, color="#4c72b0", label="accuracy (95% CI)")
        ax.scatter(names, [per_format[n]["bias"]["best_constant"]["accuracy"] for n in names], color="#dd8452",
                   zorder=3, label="best constant letter")
        ax.scatter(names, [per_format[n]["bias"]["chance"] for n in names], color="#55a868", marker="_", s=400,
                   zorder=3, label="chance")
        ax.set_ylim(0, 1)
        ax.set_title(f"PsychCounsel-Bench ({mode})")
        ax.legend(fontsize=7)
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
        letters = [L.upper() for L in LETTERS] + ["unparsed"]
        width = 0.8 / max(len(names), 1)
        for j, n in enumerate(names):
            counts = [per_format[n]["bias"]["predicted"][L] for L in letters]
            bx.bar([i + j * width for i in range(len(letters))], counts, width=width, label=n)
        bx.set_xticks([i + 0.4 - width / 2 for i in range(len(letters))], letters)
        bx.set_title("predicted letters")
        bx.legend(fontsize=7)
        save_fig(fig, path)
