"""JSON label outputs: tolerant extraction of a JSON object from model text, and validation
against a label schema (a JSON Schema file under `evaluation/schemas/`) with stable reason codes.

Used by data prep (teacher answers), the `json_labels` eval plugin, the LLM judge and GGUF
constrained decoding. A task declares its schema in `psy.label_schema`; the student task's is
`evaluation/schemas/student_labels.json`.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from psyfactory.core.errors import ConfigError
from psyfactory.core.paths import repo_path

THINK_RE = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
FENCE_RE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
# jsonschema validator name -> our reason code
_REASONS = {"required": "missing_key", "additionalProperties": "extra_key", "type": "wrong_type",
            "enum": "out_of_range", "minimum": "out_of_range", "maximum": "out_of_range"}


def strip_think(text: str) -> tuple[str, bool]:
    """Remove `<think>…</think>` blocks (an unterminated one runs to the end). A leading `…</think>`
    whose `<think>` was part of the prompt (templates that open the block themselves) is removed too.
    Returns (text, had_think)."""
    head, sep, tail = text.partition("</think>")
    if sep and "<think>" not in head:
        return THINK_RE.sub("", tail), True
    stripped = THINK_RE.sub("", text)
    return stripped, stripped != text


def strip_think_trimmed(text: str) -> tuple[str, bool]:
    """:func:`strip_think` plus surrounding whitespace."""
    stripped, had = strip_think(text)
    return stripped.strip(), had


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


@dataclass
class LabelParse:
    labels: dict[str, Any] | None  # set only when the answer is fully valid
    reasons: list[str] = field(default_factory=list)
    extraction: Extraction = field(default_factory=Extraction)


@dataclass(frozen=True)
class LabelSchema:
    """A flat label schema: an object whose `required` keys are the fields, each an `enum` of integers
    (ordinal labels), an `enum` of strings (categorical labels) or a free-text string."""

    path: Path
    schema: dict[str, Any]

    @property
    def keys(self) -> list[str]:
        return list(self.schema["required"])

    def values(self, key: str) -> list[Any]:
        return list(self.schema["properties"][key].get("enum") or [])

    def ordinal_keys(self) -> list[str]:
        return [k for k in self.keys if self.values(k) and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 for v in self.values(k))]

    def categorical_keys(self) -> list[str]:
        return [k for k in self.keys if self.values(k) and all(isinstance(v, str) for v in self.values(k))]

    def text_keys(self) -> list[str]:
        return [k for k in self.keys if not self.values(k)]

    def reasons(self, value: Any) -> list[str]:
        return schema_reasons(value, self.schema)

    def parse(self, text: str) -> LabelParse:
        """Extract + validate one model output."""
        ex = extract_json(text)
        if ex.error:
            return LabelParse(None, [ex.error], ex)
        reasons = self.reasons(ex.value)
        return LabelParse(None if reasons else ex.value, reasons, ex)

    def dump(self, labels: dict[str, Any]) -> str:
        """Canonical JSON string (key order of the schema), the training target."""
        return json.dumps({k: labels[k] for k in self.keys}, ensure_ascii=False)


@cache
def load_schema(path: str | Path) -> LabelSchema:
    """A label schema file (absolute or relative to the checkout, paths.repo_path); errors name the file and the problem."""
    full = repo_path(path)
    try:
        schema = json.loads(full.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{full}: label schema not found (psy.label_schema)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{full}:{e.lineno}: invalid JSON ({e.msg})") from None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise ConfigError(f"{full}: not a valid JSON Schema: {e.message}") from None
    props = schema.get("properties") if isinstance(schema, dict) else None
    required = schema.get("required") if isinstance(schema, dict) else None
    if schema.get("type") != "object" or not isinstance(props, dict) or not required:
        raise ConfigError(f"{full}: a label schema is an object with 'properties' and 'required' keys")
    for key in required:
        prop = props.get(key)
        if not isinstance(prop, dict) or not (prop.get("enum") or prop.get("type") == "string"):
            raise ConfigError(f"{full}: field '{key}' needs an 'enum' of allowed values or \"type\": \"string\"")
    return LabelSchema(full, schema)


_MAX_ENUM_RANGE = 64  # integer ranges up to this size become enums in the grammar


def grammar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as handed to the grammar compiler: same language, explicit where it matters.

    Small bounded integer ranges become enums (the grammar then enumerates the allowed numbers
    instead of relying on min/max support), and objects get `additionalProperties: false` unless
    they say otherwise, so the grammar cannot wander into extra keys.
    """
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer" and "enum" not in node and {"minimum", "maximum"} <= node.keys():
                lo, hi = int(node["minimum"]), int(node["maximum"])
                if hi - lo < _MAX_ENUM_RANGE:
                    node["enum"] = list(range(lo, hi + 1))
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out
