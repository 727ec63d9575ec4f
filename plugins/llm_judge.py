"""`llm_judge`: rubric scores from a judge model behind an OpenAI-compatible endpoint.

Rubrics are data (``evaluation/rubrics/<name>.yaml``): a system prompt, integer ``criteria`` with
ranges, and optionally ``attributes`` (then every attribute is scored on every criterion, as in the
LongEmotion ES rubric). The judge's reply must be ONE JSON object matching the schema built from the
rubric; invalid replies are retried and, if they keep failing, reported with their reason. A failed
sample gets no score: nothing is guessed.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from psyfactory.core import settings
from psyfactory.core.errors import EvalError
from psyfactory.core.paths import EVALUATION_DIR
from psyfactory.plugins.base import EvalContext, EvalPlugin, PluginOptions, PluginResult, TaskInfo, md_table

RUBRICS_DIR = EVALUATION_DIR / "rubrics"


@dataclass(frozen=True)
class Criterion:
    key: str
    min: int
    max: int
    description: str = ""


@dataclass(frozen=True)
class Rubric:
    name: str
    system: str
    criteria: tuple[Criterion, ...]
    attributes: tuple[tuple[str, str], ...] = ()  # (key, description)
    description: str = ""

    def schema(self) -> dict[str, Any]:
        """JSON Schema of a valid judge reply (an optional free-text ``rationale`` is allowed)."""
        scores = {c.key: {"type": "integer", "minimum": c.min, "maximum": c.max} for c in self.criteria}
        block = {"type": "object", "properties": scores, "required": list(scores), "additionalProperties": False}
        props: dict[str, Any] = ({a: block for a, _ in self.attributes} if self.attributes else dict(scores))
        return {"type": "object", "properties": {**props, "rationale": {"type": "string"}},
                "required": list(props), "additionalProperties": False}

    def reply_format(self) -> str:
        ranges = ", ".join(f'"{c.key}": <integer {c.min}-{c.max}>' for c in self.criteria)
        if not self.attributes:
            return "{" + ranges + ', "rationale": "<one sentence>"}'
        inner = ", ".join(f'"{a}": {{{ranges}}}' for a, _ in self.attributes)
        return "{" + inner + ', "rationale": "<one sentence>"}'


def available_rubrics() -> list[str]:
    return sorted(p.stem for p in RUBRICS_DIR.glob("*.yaml"))


def load_rubric(name_or_path: str) -> Rubric:
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = RUBRICS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise EvalError(f"unknown rubric {name_or_path!r}; known: {', '.join(available_rubrics())}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        criteria = tuple(Criterion(str(c["key"]), int(c["min"]), int(c["max"]), str(c.get("description", "")))
                         for c in raw["criteria"])
        attributes = tuple((str(a["key"]), str(a.get("description", ""))) for a in raw.get("attributes") or [])
        system = str(raw["system"])
    except (KeyError, TypeError, ValueError) as e:
        raise EvalError(f"{path}: a rubric needs 'system' and 'criteria' [{{key, min, max}}] "
                        f"(optional 'attributes' [{{key}}]): {e!r}") from None
    if not criteria or any(c.min > c.max for c in criteria):
        raise EvalError(f"{path}: field 'criteria' must be non-empty with min <= max")
    return Rubric(str(raw.get("name", path.stem)), system, criteria, attributes, str(raw.get("description", "")))


class JudgeClient(Protocol):
    def complete_json(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> JudgeReply: ...


@dataclass
class JudgeReply:
    value: dict[str, Any] | None
    attempts: int
    failure: str | None = None  # why the last attempt was rejected (None when value is set)


def judge_messages(rubric: Rubric, context: list[dict[str, str]], reference: str, candidate: str,
                   max_context_chars: int = 8000) -> list[dict[str, str]]:
    """The judge's conversation: the rubric as system prompt, the material and the reply format."""
    history = "\n".join(f"[{m['role']}] {m['content']}" for m in context if m["role"] != "system")
    if len(history) > max_context_chars:  # long case reports: keep the end, which the reply answers
        history = "[…]" + history[-max_context_chars:]
    crit = "\n".join(f"- {c.key} ({c.min}-{c.max}): {c.description}" for c in rubric.criteria)
    parts = [f"Criteria:\n{crit}"]
    if rubric.attributes:
        parts.append("Headings:\n" + "\n".join(f"- {a}: {d}" for a, d in rubric.attributes))
    parts += [f"Material:\n{history}", f"Reference:\n{reference}", f"Candidate:\n{candidate}",
              f"Reply with exactly this JSON shape and nothing else:\n{rubric.reply_format()}"]
    return [{"role": "system", "content": rubric.system}, {"role": "user", "content": "\n\n".join(parts)}]


def aggregate(rubric: Rubric, replies: list[JudgeReply]) -> dict[str, Any]:
    """Mean score per criterion (and per attribute × criterion) over the judged samples."""
    ok = [r.value for r in replies if r.value is not None]
    means: dict[str, float | None] = {}
    per_attribute: dict[str, dict[str, float | None]] = {}
    for c in rubric.criteria:
        if rubric.attributes:
            for a, _ in rubric.attributes:
                vals = [v[a][c.key] for v in ok]
                per_attribute.setdefault(a, {})[c.key] = statistics.fmean(vals) if vals else None
            vals = [v[a][c.key] for v in ok for a, _ in rubric.attributes]
        else:
            vals = [v[c.key] for v in ok]
        means[c.key] = statistics.fmean(vals) if vals else None
    failures = Counter(r.failure or "unknown" for r in replies if r.value is None)
    out: dict[str, Any] = {
        "rubric": rubric.name, "n": len(replies), "judged": len(ok), "failed": len(replies) - len(ok),
        "failure_reasons": dict(failures.most_common()), "attempts": sum(r.attempts for r in replies),
        "mean": means,
    }
    if per_attribute:
        out["per_attribute"] = per_attribute
    return out


def reply_validator(schema: dict[str, Any]) -> Any:
    """Judge reply text -> (value, reasons): tolerant JSON extraction (fences, prose around it),
    then schema reason codes (missing_key:…, out_of_range:causes.clarity, …)."""
    from psyfactory.core.labels import extract_json, schema_reasons

    def validate(text: str) -> tuple[Any, list[str]]:
        ex = extract_json(text)
        if ex.error:
            return None, [ex.error]
        reasons = schema_reasons(ex.value, schema)
        return (None if reasons else ex.value), reasons

    return validate


class OpenAIJudge:
    """Judge behind an OpenAI-compatible endpoint (:class:`psyfactory.llm_client.ChatClient`)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, retries: int = 2,
                 timeout: float = 120.0, max_tokens: int = 512) -> None:
        from psyfactory.core.llm_client import ChatClient, Endpoint

        self.retries = retries
        self.client = ChatClient(Endpoint(base_url, model, api_key or "EMPTY", timeout), max_tokens=max_tokens)

    def complete_json(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> JudgeReply:
        try:
            r = self.client.complete_json(messages, reply_validator(schema), retries=self.retries)
        except Exception as e:  # transport errors (after the client's own retries) are failures, not scores
            return JudgeReply(None, 1, f"request_error:{type(e).__name__}")
        return JudgeReply(r.value, r.attempts, None if r.ok else ",".join(r.reasons[-1]))


class Options(PluginOptions):
    rubric: str = "cpsycoune_turn"  # evaluation/rubrics/<name>.yaml or a YAML path
    base_url: str | None = None  # OpenAI-compatible endpoint; default $PSY_JUDGE_BASE_URL
    model: str | None = None  # model name sent to it; default $PSY_JUDGE_MODEL
    retries: int = 2  # re-asks after an invalid reply
    timeout: float = 120.0  # seconds per request
    max_tokens: int = 512  # per reply
    max_context_chars: int = 8000  # dialogue history shown to the judge (the end is kept)


def make_client(opts: Options) -> JudgeClient:
    """From the options, falling back to $PSY_JUDGE_BASE_URL and $PSY_JUDGE_MODEL; the key is only ever
    read from the environment ($PSY_JUDGE_API_KEY, else $OPENAI_API_KEY): configs are written to disk."""
    from psyfactory.core.llm_client import Endpoint

    env = Endpoint.from_env("PSY_JUDGE")
    base_url = opts.base_url or (env.base_url if env else None)
    if not base_url:
        raise EvalError("llm_judge: no judge endpoint; set psy.eval_options.llm_judge.base_url, --judge-url "
                        "or PSY_JUDGE_BASE_URL")
    model = opts.model or (env.model if env else "default")
    key = settings.get("PSY_JUDGE_API_KEY") or settings.get("OPENAI_API_KEY")
    return OpenAIJudge(base_url, model, api_key=key,
                       retries=opts.retries, timeout=opts.timeout, max_tokens=opts.max_tokens)


class LLMJudgePlugin(EvalPlugin):
    name = "llm_judge"
    Options = Options
    client: JudgeClient | None = None  # set to use a judge object directly (tests, custom transports)

    def headline_keys(self, metrics: dict[str, Any]) -> list[str]:
        return ["n", *(f"mean.{k}" for k in metrics.get("mean", {})), "failed"]

    def check(self, options: Options, task: TaskInfo) -> None:
        load_rubric(options.rubric)
        if self.client is None:
            make_client(options)  # an endpoint must be configured

    def run(self, ctx: EvalContext) -> PluginResult:
        assert ctx.predictions is not None
        opts: Options = ctx.options or Options()
        rubric = load_rubric(opts.rubric)
        client = self.client or make_client(opts)
        schema = rubric.schema()
        from tqdm.auto import tqdm

        replies = []
        for s, p in tqdm(list(zip(ctx.samples, ctx.predictions, strict=True)), desc="judge", unit="sample"):
            msgs = judge_messages(rubric, s.messages, s.reference, p, opts.max_context_chars)
            replies.append(client.complete_json(msgs, schema))
        m = aggregate(rubric, replies)
        rows = [(k, v) for k, v in m["mean"].items()]
        lines = [
            "## llm_judge",
            f"rubric `{rubric.name}` ({rubric.description}); judged {m['judged']} of {m['n']} samples "
            f"in {m['attempts']} judge calls; failed after retries: {m['failed']}.",
            md_table(["criterion", "mean"], rows),
        ]
        if "per_attribute" in m:
            crit = [c.key for c in rubric.criteria]
            lines.append(md_table(["attribute", *crit], [(a, *(d[c] for c in crit)) for a, d in m["per_attribute"].items()]))
        if m["failure_reasons"]:
            lines.append(md_table(["judge failure", "samples"], list(m["failure_reasons"].items())))
        items = [{"id": s.id, "scores": r.value, "attempts": r.attempts, "failure": r.failure}
                 for s, r in zip(ctx.samples, replies, strict=True)]
        return PluginResult(m, "\n\n".join(lines), [], items)
