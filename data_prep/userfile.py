"""Your own data, described in a task YAML (`psy.data.file`): JSON, JSONL, CSV or Parquet records in
alpaca, sharegpt or OpenAI-messages shape, mapped with LLaMA-Factory's `columns` / `tags` names.

Every record is a unit of the accounting: it is either written (normalised to our alpaca or sharegpt
layout, PII scrubbed) or quarantined with its file, line/row and reason (missing field, wrong type,
empty text, a conversation that does not alternate user/assistant or does not end on the assistant,
an exact duplicate...). Without an `eval_file` the records are split by count, seeded:
round(eval_share x n) go to eval.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from psyfactory.data_prep.common import (
    MAX_RECORD_BYTES,
    BuildContext,
    Dedup,
    Ledger,
    TaskOutput,
    decode,
    json_error_kind,
    load_json_array,
    read_bytes,
    split_by_count,
    text_key,
)

# LLaMA-Factory's defaults (its dataset_info.json documentation), per format.
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                  "history": "history"}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system"}
OPENAI_COLUMNS = {"messages": "messages", "system": "system"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "system_tag": "system"}


class Bad(Exception):
    """A record that cannot be used: (reason, detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def records(path: Path, ledger: Ledger, needs_json_cells: bool) -> Iterator[tuple[str, Any]]:
    """(where, record) for each record of a file; unreadable records are quarantined here."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        yield from load_json_array(path, ledger)
    elif suffix == ".jsonl":
        text = decode(read_bytes(path), path, ledger)
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            ledger.read()
            where = f"line {n}"
            if len(line) > MAX_RECORD_BYTES:
                ledger.quarantine(path, where, "record_too_large", f"{len(line)} characters")
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                ledger.quarantine(path, where, json_error_kind(line, "}"), e.msg)
    elif suffix == ".csv":
        text = decode(read_bytes(path), path, ledger)
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            ledger.read()
            where = f"line {reader.line_num}"
            if None in row:  # more cells than header columns
                ledger.quarantine(path, where, "csv_extra_cells", f"{len(row[None])} cell(s) beyond the header")
                continue
            yield where, _json_cells(row) if needs_json_cells else row
    elif suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as e:  # pyarrow: not a parquet file, truncated
            raise Bad("unreadable", f"{type(e).__name__}: {e}") from None
        for n, row in enumerate(frame.to_dict(orient="records"), 1):
            ledger.read()
            yield f"row {n}", {k: _plain(v) for k, v in row.items()}


def _json_cells(row: dict[str, Any]) -> dict[str, Any]:
    """CSV cells that hold JSON (a conversation column) decoded; others kept as text."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, str) and v.strip()[:1] in ("[", "{"):
            try:
                out[k] = json.loads(v)
                continue
            except json.JSONDecodeError:
                pass
        out[k] = v
    return out


def _plain(value: Any) -> Any:
    """numpy values from pandas as plain Python (arrays as lists, NaN as None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def _text(rec: dict[str, Any], column: str, *, required: bool) -> str:
    value = rec.get(column)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise Bad("missing_field", f"missing field '{column}'")
        return ""
    if not isinstance(value, str):
        raise Bad("wrong_type", f"field '{column}' is {type(value).__name__}, expected text")
    if required and not value.strip():
        raise Bad("empty_field", f"field '{column}' is empty")
    return value


def alpaca(rec: Any, columns: dict[str, str]) -> tuple[dict[str, Any], list[list[str]]]:
    """(instruction/input/output/system record, history pairs) of an alpaca record."""
    if not isinstance(rec, dict):
        raise Bad("wrong_type", f"record is {type(rec).__name__}, expected an object")
    cols = {**ALPACA_COLUMNS, **columns}
    out = {"instruction": _text(rec, cols["prompt"], required=True), "input": _text(rec, cols["query"], required=False),
           "output": _text(rec, cols["response"], required=True),
           "system": _text(rec, cols["system"], required=False)}  # LF reads every mapped column: "" when none
    history = rec.get(cols["history"]) or []
    if not isinstance(history, list) or any(not (isinstance(h, list | tuple) and len(h) == 2
                                                 and all(isinstance(x, str) for x in h)) for h in history):
        raise Bad("wrong_type", f"field '{cols['history']}' must be a list of [question, answer] pairs")
    return out, [list(h) for h in history]


def conversation(rec: Any, columns: dict[str, str], tags: dict[str, str], openai: bool) -> list[dict[str, str]]:
    """The record's messages as role/content dicts (system first), checked: user and assistant alternate,
    starting with the user and ending on the assistant, no empty turn."""
    if not isinstance(rec, dict):
        raise Bad("wrong_type", f"record is {type(rec).__name__}, expected an object")
    cols = {**(OPENAI_COLUMNS if openai else SHAREGPT_COLUMNS), **columns}
    t = {**(OPENAI_TAGS if openai else SHAREGPT_TAGS), **tags}
    raw = rec.get(cols["messages"])
    if raw is None:
        raise Bad("missing_field", f"missing field '{cols['messages']}'")
    if not isinstance(raw, list) or not raw:
        raise Bad("wrong_type", f"field '{cols['messages']}' must be a non-empty list of messages")
    roles = {t["user_tag"]: "user", t["assistant_tag"]: "assistant", t["system_tag"]: "system"}
    msgs: list[dict[str, str]] = []
    system = rec.get(cols["system"])
    if isinstance(system, str) and system.strip():
        msgs.append({"role": "system", "content": system})
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise Bad("wrong_type", f"message {i} is {type(m).__name__}, expected an object")
        role = roles.get(m.get(t["role_tag"]))
        if role is None:
            raise Bad("unknown_role", f"message {i}: {t['role_tag']}={m.get(t['role_tag'])!r} is none of "
                                      f"{', '.join(map(repr, roles))} (tags: role names)")
        content = m.get(t["content_tag"])
        if not isinstance(content, str):
            raise Bad("wrong_type", f"message {i}: '{t['content_tag']}' must be text")
        if not content.strip():
            raise Bad("empty_turn", f"message {i} ({role}) is empty")
        if role == "system" and msgs:
            raise Bad("bad_turn_order", f"message {i}: a system message only comes first")
        msgs.append({"role": role, "content": content})
    turns = [m["role"] for m in msgs if m["role"] != "system"]
    if not turns or turns[-1] != "assistant":
        raise Bad("no_final_reply", "the conversation does not end on an assistant reply")
    if any(r != ("user" if k % 2 == 0 else "assistant") for k, r in enumerate(turns)):
        raise Bad("bad_turn_order", "user and assistant turns do not alternate, starting with the user")
    return msgs


def normalise(rec: Any, spec: Any, ledger: Ledger) -> tuple[str, dict[str, Any]]:
    """(layout, record) with PII scrubbed: alpaca stays alpaca unless it has history (then sharegpt)."""
    if spec.format == "alpaca":
        out, history = alpaca(rec, spec.columns)
        if not history:
            return "alpaca", {k: ledger.scrub(v) for k, v in out.items()}
        msgs = [{"role": "system", "content": out["system"]}] if out.get("system") else []
        for q, a in history:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        prompt = f"{out['instruction']}\n{out['input']}" if out["input"] else out["instruction"]
        msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": out["output"]}]
    else:
        msgs = conversation(rec, spec.columns, spec.tags, spec.format == "openai")
    return "sharegpt", {"messages": [{"role": m["role"], "content": ledger.scrub(m["content"])} for m in msgs]}


def _read(path: Path, spec: Any, ledger: Ledger, dedup: Dedup) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, layout, record) of every usable record of one file."""
    out = []
    try:
        for where, rec in records(path, ledger, spec.format != "alpaca"):
            try:
                layout, norm = normalise(rec, spec, ledger)
            except Bad as e:
                ledger.quarantine(path, where, e.reason, e.detail)
                continue
            key = text_key(json.dumps(norm, ensure_ascii=False, sort_keys=True))
            first = dedup.first(key, where)
            if first is not None:
                ledger.quarantine(path, where, "duplicate", f"same record as {first}")
                continue
            out.append((key, layout, norm))
            ledger.ok()
    except Bad as e:  # a whole file that cannot be read (not parquet...)
        from psyfactory.data_prep.common import DataError

        raise DataError(f"{path}: {e.detail}") from None
    return out


def build(ctx: BuildContext, spec: Any) -> TaskOutput:
    """data/<task>/{train,eval}.jsonl from the task's own file(s) (data_prep.FileSpec)."""
    from psyfactory.data_prep.common import DataError

    for f in (spec.file, spec.eval_file):
        if f is not None and not Path(f).is_file():
            raise DataError(f"{f}: data file not found (psy.data of task '{ctx.task}'; relative paths are read from "
                            "the task file's folder)")
    dedup = Dedup()
    main = ctx.ledger(Path(spec.file).name, Path(spec.file).parent)
    rows = _read(Path(spec.file), spec, main, dedup)
    ledgers = [main]
    if spec.eval_file is not None:
        el = ctx.ledger(Path(spec.eval_file).name, Path(spec.eval_file).parent)
        evals = _read(Path(spec.eval_file), spec, el, dedup)
        ledgers.append(el)
        train = rows
    else:
        side = split_by_count([k for k, _, _ in rows], ctx.seed, spec.eval_share, prefix=f"{ctx.task}:")
        train = [r for r in rows if side[r[0]] == "train"]
        evals = [r for r in rows if side[r[0]] == "eval"]
    layout = "sharegpt" if any(lay == "sharegpt" for _, lay, _ in rows + evals) else "alpaca"
    if layout == "sharegpt":  # one layout per task: alpaca records (no history) become one exchange
        train, evals = [_as_sharegpt(r) for r in train], [_as_sharegpt(r) for r in evals]
    splits = {"train": [{"id": f"{ctx.task}-{k[:12]}", **rec} for k, _, rec in train],
              "eval": [{"id": f"{ctx.task}-{k[:12]}", **rec} for k, _, rec in evals]}
    main.acc.samples["train"] = len(splits["train"])
    ledgers[-1].acc.samples["eval"] = len(splits["eval"])
    main.acc.options = {"format": spec.format, "eval": "eval_file" if spec.eval_file else
                        f"{spec.eval_share:g} of the records by count (seed {ctx.seed})", "pii_scrub": ctx.options.scrub}
    return TaskOutput(ctx.task, layout, splits, ledgers)


def _as_sharegpt(row: tuple[str, str, dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    key, layout, rec = row
    if layout == "sharegpt":
        return row
    msgs = [{"role": "system", "content": rec["system"]}] if rec.get("system") else []
    prompt = f"{rec['instruction']}\n{rec['input']}" if rec.get("input") else rec["instruction"]
    msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": rec["output"]}]
    return key, "sharegpt", {"messages": msgs}
