"""PsyQA (thu-coai): question + description -> answer (alpaca), split by questionID.

Raw: `PsyQA/PsyQA_full.json` (full data, by agreement) or `PsyQA/PsyQA_example.json` (public sample):
one JSON array, CRLF. Record: question, description, keywords (comma-joined str), questionID (int),
answers [{answer_text, has_label, labels_sequence | null}].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psyfactory.data_prep.common import (
    BuildContext,
    DataError,
    Dedup,
    Ledger,
    TaskOutput,
    field_problem,
    get_str,
    load_json_array,
    split_of,
    text_key,
)

FILES = ("PsyQA_full.json", "PsyQA_example.json")
EVAL_FRACTION = 0.1
STRATEGIES = {"Interpretation", "Direct Guidance", "Others", "Approval and Reassurance", "Self-disclosure",
              "Restatement", "Information"}


@dataclass(frozen=True)
class Answer:
    text: str
    has_label: bool


@dataclass(frozen=True)
class Question:
    qid: int
    question: str
    description: str
    keywords: tuple[str, ...]
    answers: tuple[Answer, ...]

    @property
    def best(self) -> Answer:
        """The strategy-labelled answer (exactly one per question upstream), else the first."""
        return next((a for a in self.answers if a.has_label), self.answers[0])


def find_file(raw_dir: Path) -> Path:
    for name in FILES:
        p = raw_dir / "PsyQA" / name
        if p.exists():
            return p
    raise DataError(f"{raw_dir / 'PsyQA'}: none of {', '.join(FILES)} found (see `make download`)")


def _answer(a: Any, i: int) -> Answer:
    if not isinstance(a, dict):
        raise TypeError(f"answers[{i}] is {type(a).__name__}, expected object")
    try:
        text = get_str(a, "answer_text")
    except (KeyError, TypeError, ValueError) as e:
        raise type(e)(f"answers[{i}].{e.args[0]}" if isinstance(e, KeyError) else f"answers[{i}]: {e}") from None
    has_label = a.get("has_label", False)
    if not isinstance(has_label, bool):
        raise TypeError(f"answers[{i}]: field 'has_label' is {type(has_label).__name__}, expected bool")
    seq = a.get("labels_sequence")
    if seq is not None:
        if not isinstance(seq, list):
            raise TypeError(f"answers[{i}]: field 'labels_sequence' is {type(seq).__name__}, expected list or null")
        for span in seq:
            if not (isinstance(span, dict) and span.get("type") in STRATEGIES):
                raise ValueError(f"answers[{i}]: labels_sequence has an unknown span {str(span)[:60]}")
    return Answer(text, has_label)


def parse(raw_dir: Path, ledger: Ledger, *, answers: bool = True) -> list[Question]:
    """Validated, de-duplicated questions in file order, PII scrubbed (`ledger.scrub`); `answers=False`:
    a task that does not use the answers (student) leaves them unscrubbed and out of its PII counts."""
    path = find_file(raw_dir)
    ledger.acc.source = f"PsyQA/{path.name}"
    out: list[Question] = []
    ids: Dedup = Dedup()
    texts: Dedup = Dedup()
    for where, rec in load_json_array(path, ledger):
        try:
            question = get_str(rec, "question")
            description = get_str(rec, "description", allow_empty=True)
            keywords = get_str(rec, "keywords", allow_empty=True)
            qid = rec.get("questionID")
            if qid is None:
                raise KeyError("questionID")
            if isinstance(qid, bool) or not isinstance(qid, int):
                raise TypeError(f"field 'questionID' is {type(qid).__name__}, expected int")
            answers = rec.get("answers")
            if answers is None:
                raise KeyError("answers")
            if not isinstance(answers, list):
                raise TypeError(f"field 'answers' is {type(answers).__name__}, expected list")
            if not answers:
                raise ValueError("field 'answers' is empty")
            parsed = tuple(_answer(a, i) for i, a in enumerate(answers))
        except (KeyError, TypeError, ValueError) as e:
            reason, detail = field_problem(e)
            ledger.quarantine(path, where, reason, detail)
            continue
        if (first := ids.first(str(qid), where)) is not None:
            ledger.quarantine(path, where, "duplicate_id", f"questionID {qid} already at {first}")
            continue
        if (first := texts.first(text_key(question, description), where)) is not None:
            ledger.quarantine(path, where, "duplicate", f"same question text as {first}")
            continue
        # exact duplicate answers within one question are dropped (counted as a note, the question stays)
        seen: set[str] = set()
        uniq = tuple(a for a in parsed if not (a.text in seen or seen.add(a.text)))
        ledger.note("duplicate_answers_dropped", len(parsed) - len(uniq))
        kw = tuple(k.strip() for k in keywords.split(",") if k.strip())
        if answers:
            uniq = tuple(Answer(ledger.scrub(a.text), a.has_label) for a in uniq)  # PII scrubbed (data_prep.pii)
        out.append(Question(qid, ledger.scrub(question), ledger.scrub(description), kw, uniq))
        ledger.ok()
    return out


def build(ctx: BuildContext, eval_fraction: float = EVAL_FRACTION) -> TaskOutput:
    raw_dir, seed = ctx.raw_dir, ctx.seed
    ledger = ctx.ledger("PsyQA")
    questions = parse(raw_dir, ledger)
    train: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    keys = {q.qid: split_of(f"psyqa:{q.qid}", seed, eval_fraction) for q in questions}
    ensure_eval(keys, ledger)
    for q in questions:
        if keys[q.qid] == "eval":
            evals.append(_sample(q, q.best, 0))
        else:
            train.extend(_sample(q, a, i) for i, a in enumerate(q.answers))
    ledger.acc.samples.update({"train": len(train), "eval": len(evals)})
    return TaskOutput(ctx.task, "alpaca", {"train": train, "eval": evals}, [ledger])


def ensure_eval(keys: dict[Any, str], ledger: Ledger) -> None:
    """Tiny inputs may hash nothing into eval: move the first key (stable order) there, with a note."""
    if len(keys) >= 2 and "eval" not in keys.values():
        keys[min(keys, key=str)] = "eval"
        ledger.note("eval_forced_nonempty")


def _sample(q: Question, a: Answer, i: int) -> dict[str, Any]:
    return {"id": f"psyqa-{q.qid}-{i}", "system": "", "instruction": q.question, "input": q.description,
            "output": a.text}
