"""Student mental-state labels: tolerant extraction of a JSON object from model text, and schema
validation with stable failure-reason codes. Shared by data prep (teacher answers), the
`json_labels` eval plugin and GGUF constrained decoding. The schema is evaluation/schemas/student_labels.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from psyfactory.paths import EVALUATION_DIR

SCHEMA_PATH = EVALUATION_DIR / "schemas" / "student_labels.json"
THINK_RE = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
FENCE_RE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
# jsonschema validator name -> our reason code
_REASONS = {"required": "missing_key", "additionalProperties": "extra_key", "type": "wrong_type",
            "enum": "out_of_range", "minimum": "out_of_range", "maximum": "out_of_range"}


@cache
def student_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def label_keys() -> list[str]:
    return list(student_schema()["required"])


def risk_flags() -> list[str]:
    return list(student_schema()["properties"]["risk_flag"]["enum"])


def ordinal_range(key: str) -> list[int]:
    return list(student_schema()["properties"][key]["enum"])


def strip_think(text: str) -> tuple[str, bool]:
    """Remove `<think>…</think>` blocks (an unterminated one runs to the end). A leading `…</think>`
    whose `<think>` was part of the prompt (templates that open the block themselves) is removed too.
    Returns (text, had_think)."""
    head, sep, tail = text.partition("</think>")
    if sep and "<think>" not in head:
        return THINK_RE.sub("", tail), True
    stripped = THINK_RE.sub("", text)
    return stripped, stripped != text


@dataclass
class Extraction:
    value: Any = None  # the decoded JSON value, or None
    had_think: bool = False
    fenced: bool = False  # found inside a ``` code fence
    surrounded: bool = False  # other non-space text around the JSON
    error: str | None = None  # "empty", "no_json", "invalid_json"


def extract_json(text: str) -> Extraction:
    """Find the first JSON object in model output, tolerating think blocks, code fences and prose."""
    body, had_think = strip_think(text or "")
    out = Extraction(had_think=had_think)
    if not body.strip():
        out.error = "empty"
        return out
    fence = FENCE_RE.search(body)
    candidate = body
    if fence:
        out.fenced = True
        candidate = fence.group(1)
    decoder = json.JSONDecoder()
    saw_brace = False
    for start in (i for i, ch in enumerate(candidate) if ch == "{"):
        saw_brace = True
        try:
            value, end = decoder.raw_decode(candidate, start)
        except json.JSONDecodeError:
            continue
        rest = (body.replace(fence.group(0), "") if fence else candidate[:start] + candidate[end:]).strip()
        out.value, out.surrounded = value, bool(rest)
        return out
    out.error = "invalid_json" if saw_brace else "no_json"
    return out


def schema_reasons(value: Any, schema: dict[str, Any]) -> list[str]:
    """Reason codes for `value` against a flat or nested object schema ([] = valid): not_object,
    missing_key:<k>, extra_key:<k>, wrong_type:<k>, out_of_range:<k>; nested keys are dotted (a.b)."""
    if not isinstance(value, dict):
        return ["not_object"]
    reasons = []
    for err in Draft202012Validator(schema).iter_errors(value):
        code = _REASONS.get(err.validator, err.validator)
        prefix = "".join(f"{p}." for p in err.path)
        if err.validator == "required":
            keys = [k for k in err.validator_value if k not in err.instance]
        elif err.validator == "additionalProperties":
            keys = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        else:
            keys, prefix = [".".join(map(str, err.path)) or "?"], ""
        reasons += [f"{code}:{prefix}{k}" for k in keys]
    # A value of the wrong type is not also "out of range".
    wrong = {r.split(":", 1)[1] for r in reasons if r.startswith("wrong_type:")}
    return sorted({r for r in reasons if not (r.startswith("out_of_range:") and r.split(":", 1)[1] in wrong)})


def validate_student_labels(value: Any) -> list[str]:
    """Reason codes for a decoded value ([] = valid): not_object, missing_key:<k>, extra_key:<k>,
    wrong_type:<k>, out_of_range:<k>."""
    return schema_reasons(value, student_schema())


@dataclass
class LabelParse:
    labels: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    extraction: Extraction = field(default_factory=Extraction)


def parse_student_labels(text: str) -> LabelParse:
    """Extract + validate. `labels` is set only when the answer is fully valid."""
    ex = extract_json(text)
    if ex.error:
        return LabelParse(None, [ex.error], ex)
    reasons = validate_student_labels(ex.value)
    return LabelParse(None if reasons else ex.value, reasons, ex)


def dump_labels(labels: dict[str, Any]) -> str:
    """Canonical JSON string (key order of the schema) used as the training target."""
    return json.dumps({k: labels[k] for k in label_keys()}, ensure_ascii=False)
