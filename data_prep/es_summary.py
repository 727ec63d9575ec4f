"""LongEmotion's own Emotion Summary task: the case (description + consultation process + experience and
reflection) -> a JSON summary with five fields, `causes`, `symptoms`, `treatment_process`,
`characteristics_of_illness`, `treatment_effect` (LongEmotion `tasks/longemotion/report_summary.yaml`).

Eval only: LongEmotion ES is a benchmark (100-150 English cases), nothing to train on. The target is
the five fields of the record as a JSON string (schema `evaluation/schemas/es_summary.json`); a record
missing one of them is quarantined.
"""

from __future__ import annotations

import json
from typing import Any

from psyfactory.data_prep.common import BuildContext, TaskOutput
from psyfactory.data_prep.es import parse_longemotion

FIELDS = ("causes", "symptoms", "treatment_process", "characteristics_of_illness", "treatment_effect")
INSTRUCTION = ("Summarize this psychological counseling case as ONE JSON object with exactly these string fields: "
               + ", ".join(FIELDS) + ". Base every field on the case; output only the JSON.")


def es_summary_input(case: str, process: str, reflection: str) -> str:
    return (f"[Case description]\n{case}\n\n[Consultation process]\n{process or '(none)'}\n\n"
            f"[Experience and reflection]\n{reflection}")


def build(ctx: BuildContext) -> TaskOutput:
    raw_dir = ctx.raw_dir
    # one eval split, in file order: no seed
    ledger = ctx.ledger("LongEmotion")
    records: list[dict[str, Any]] = []
    parse_longemotion(raw_dir, ledger, records=records)
    rows = []
    for rec in records:
        missing = [f for f in FIELDS if not isinstance(rec.get(f), str) or not rec[f].strip()]
        if missing:
            ledger.reject(ledger.acc.source, rec["_where"], "missing_field", f"no summary field(s) {missing}")
            continue
        # the fields' hard line breaks are layout; PII scrubbed like the input (data_prep.pii)
        target = {f: ledger.scrub(" ".join(rec[f].split())) for f in FIELDS}
        rows.append({"id": f"longemotion-es-{rec['id']}", "system": "", "instruction": INSTRUCTION,
                     "input": es_summary_input(rec["_case"], rec["_process"], rec["_reflection"]),
                     "output": json.dumps(target, ensure_ascii=False)})
    ledger.acc.samples["eval"] = len(rows)
    return TaskOutput(ctx.task, "alpaca", {"eval": rows}, [ledger])
