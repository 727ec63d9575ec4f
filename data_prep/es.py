"""Emotion Summary (ES): case description + consultation process -> experience and reflection.

Train / val: PsyQA in the ES shape, split by question 85% / 15% by count (exactly round(0.15 n) questions in
val, seeded: 85 / 15 of the 100-question example, as seed 000 did). Case
description = [question, description]; consultation process = the other helpers' answers (none if
the question has one answer); target = the strategy-labelled answer (a reflective analysis of the
case). Besides the alpaca rows (`es_train`, `es_val`), the ES-shaped records themselves are written
(`data/es/psyqa_es_{train,val}.jsonl`: `{id, case_description: [..], consultation_process: [..],
experience_and_reflection}`). Eval (predict set): LongEmotion `LongEmotion/Emotion_Summary_origin.jsonl`
(or `Emotion_Summary.jsonl`), list fields joined with newlines; target = `experience_and_reflection`;
`make eval` writes LongEmotion's submission file from the predictions (plugin `submission`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psyfactory.data_prep import psyqa
from psyfactory.data_prep.common import (
    MAX_RECORD_BYTES,
    BuildContext,
    DataError,
    Dedup,
    Ledger,
    TaskOutput,
    decode,
    field_problem,
    get_str,
    json_error_kind,
    read_bytes,
    split_by_count,
    text_key,
)

VAL_FRACTION = 0.15  # seed 000: 85% train / 15% validation

LE_FILES = ("Emotion_Summary_origin.jsonl", "Emotion_Summary.jsonl")
INSTRUCTION = ("Read the case description and the consultation process, then write the counselor's "
               "experience and reflection on this case. / 阅读案例描述和咨询过程，写出咨询师对本案例的经验与反思。")


def es_input(case: str, process: str) -> str:
    return f"[Case description / 案例描述]\n{case}\n\n[Consultation process / 咨询过程]\n{process or '（无）'}"


def _joined(rec: dict[str, Any], key: str) -> str:
    if key not in rec or rec[key] is None:
        raise KeyError(key)
    val = rec[key]
    if isinstance(val, str):
        parts = [val]
    elif isinstance(val, list) and all(isinstance(x, str) for x in val):
        parts = val
    else:
        raise TypeError(f"field '{key}' is {type(val).__name__}, expected list of strings")
    text = "\n".join(p.strip() for p in parts if p.strip())
    if not text:
        raise ValueError(f"field '{key}' is empty")
    return text


def parse_longemotion(raw_dir: Path, ledger: Ledger, *, records: list[dict[str, Any]] | None = None,
                      ) -> list[dict[str, Any]]:
    """LongEmotion ES records as alpaca rows (ES); `records` also collects the validated raw records."""
    folder = raw_dir / "LongEmotion"
    path = next((folder / n for n in LE_FILES if (folder / n).exists()), None)
    if path is None:
        raise DataError(f"{folder}: none of {', '.join(LE_FILES)} found (see `make download`)")
    ledger.acc.source = f"LongEmotion/{path.name}"
    raw_lines = read_bytes(path).split(b"\n")
    if raw_lines and not raw_lines[-1].strip():
        raw_lines.pop()
    dedup = Dedup()
    out = []
    for lineno, b in enumerate(raw_lines, 1):
        ledger.read()
        where = f"line {lineno}"
        if len(b) > MAX_RECORD_BYTES:
            ledger.quarantine(path, where, "record_too_large", f"{len(b)} bytes > {MAX_RECORD_BYTES}")
            continue
        try:
            line = decode(b, path, ledger if lineno == 1 else None)
        except DataError as e:
            ledger.quarantine(path, where, "encoding", str(e).split(": ", 2)[-1])
            continue
        if not line.strip():
            ledger.quarantine(path, where, "empty_line")
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            kind = json_error_kind(line, "}")
            ledger.quarantine(path, where, kind, f"{e.msg} at column {e.colno}")
            continue
        try:
            if not isinstance(rec, dict):
                raise TypeError(f"record is {type(rec).__name__}, expected object")
            case = _joined(rec, "case_description")
            process = _joined(rec, "consultation_process")
            target = get_str(rec, "experience_and_reflection")
        except (KeyError, TypeError, ValueError) as e:
            reason, detail = field_problem(e)
            ledger.quarantine(path, where, reason, detail)
            continue
        if (first := dedup.first(text_key(case, process), where)) is not None:
            ledger.quarantine(path, where, "duplicate", f"same case as {first}")
            continue
        rid = rec.get("id", lineno)
        case, process, target = ledger.scrub(case), ledger.scrub(process), ledger.scrub(target)  # data_prep.pii
        out.append({"id": f"longemotion-es-{rid}", "system": "", "instruction": INSTRUCTION,
                    "input": es_input(case, process), "output": target})
        if records is not None:  # the summary fields are scrubbed by their user (es_summary)
            records.append({**rec, "id": rid, "_case": case, "_process": process, "_reflection": target,
                            "_where": where})
        ledger.ok()
    return out


def build(ctx: BuildContext, val_fraction: float = VAL_FRACTION) -> TaskOutput:
    raw_dir, seed = ctx.raw_dir, ctx.seed
    ql = ctx.ledger("PsyQA")
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    shaped: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    questions = psyqa.parse(raw_dir, ql)
    which = split_by_count([str(q.qid) for q in questions], seed, val_fraction, prefix="es:")
    for q in questions:
        best = q.best
        others = [a.text for a in q.answers if a is not best]
        case_parts = [q.question, *([q.description] if q.description else [])]
        split = "val" if which[str(q.qid)] == "eval" else "train"
        splits[split].append({"id": f"psyqa-es-{q.qid}", "system": "", "instruction": INSTRUCTION,
                              "input": es_input("\n".join(case_parts), "\n\n".join(others)), "output": best.text})
        shaped[split].append({"id": f"psyqa-es-{q.qid}", "case_description": case_parts,
                              "consultation_process": others, "experience_and_reflection": best.text})
    if not splits["val"] and len(splits["train"]) > 1:  # a tiny input: keep one question for validation
        splits["val"].append(splits["train"].pop())
        shaped["val"].append(shaped["train"].pop())
        ql.note("val_forced_nonempty")
    ll = ctx.ledger("LongEmotion")
    evals = parse_longemotion(raw_dir, ll)
    ql.acc.samples["train"], ql.acc.samples["val"] = len(splits["train"]), len(splits["val"])
    ll.acc.samples["eval"] = len(evals)
    return TaskOutput(ctx.task, "alpaca", {**splits, "eval": evals}, [ql, ll],
                      extra_files={"psyqa_es_train.jsonl": shaped["train"], "psyqa_es_val.jsonl": shaped["val"]})
