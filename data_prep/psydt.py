"""PsyDTCorpus (SoulChat2.0 / PsyDT): multi-turn OpenAI messages -> sharegpt.

Raw (folder `PsyDTCorpus/`): `PsyDTCorpus_train_mulit_turn_packing.json` (sic) -> train and
`PsyDTCorpus_test_single_turn_split.json` -> eval (one record per assistant turn; target = last
assistant message). Record: {id, normalizedTag, messages: [{role, content}]}, system = school persona.

When only the public README example (`PsyDTCorpus_README_example.json`) or no test file is present,
the eval set is derived: held-out train dialogues (seeded) split into one record per assistant turn,
exactly like the official test file. With a single dialogue, that dialogue is used for both and the
accounting notes `eval_overlaps_train` (example data only; never do this with real data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_prep.common import (
    BuildContext,
    DataError,
    Dedup,
    Ledger,
    TaskOutput,
    load_json_array,
    split_of,
    text_key,
)

TRAIN_FILES = ("PsyDTCorpus_train_mulit_turn_packing.json", "PsyDTCorpus_README_example.json")
TEST_FILE = "PsyDTCorpus_test_single_turn_split.json"
EVAL_FRACTION = 0.05
ROLES = ("system", "user", "assistant")

Messages = list[dict[str, str]]


def validate_messages(rec: Any, ledger: Ledger) -> Messages:
    """Return cleaned OpenAI messages or raise ValueError('reason: detail')."""
    if not isinstance(rec, dict):
        raise ValueError(f"wrong_type: record is {type(rec).__name__}, expected object")
    msgs = rec.get("messages")
    if msgs is None:
        raise ValueError("missing_field: missing field 'messages'")
    if not isinstance(msgs, list):
        raise ValueError(f"wrong_type: field 'messages' is {type(msgs).__name__}, expected list")
    out: Messages = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise ValueError(f"wrong_type: messages[{i}] is {type(m).__name__}, expected object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"bad_role: messages[{i}].role = {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"wrong_type: messages[{i}].content is {type(content).__name__}, expected string")
        content = content.replace("\r\n", "\n").strip()
        if not content:
            raise ValueError(f"empty_field: messages[{i}].content is empty")
        if role == "system" and i != 0:
            raise ValueError(f"bad_order: system message at position {i}")
        out.append({"role": role, "content": content})
    body = out[1:] if out and out[0]["role"] == "system" else out
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise ValueError(f"bad_order: expected {want} at turn {i}, got {m['role']}")
    if body and body[-1]["role"] == "user":  # trailing unanswered user turn: not trainable
        out.pop()
        body = body[:-1]
        ledger.note("trailing_user_turn_dropped")
    if not body:
        raise ValueError("no_dialogue: no user/assistant pair")
    return out


def _records(path: Path, ledger: Ledger, dedup: Dedup) -> list[tuple[str, Messages, str]]:
    out = []
    for where, rec in load_json_array(path, ledger):
        try:
            msgs = validate_messages(rec, ledger)
        except ValueError as e:
            reason, _, detail = str(e).partition(": ")
            ledger.quarantine(path, where, reason, detail)
            continue
        if (first := dedup.first(text_key(*(m["content"] for m in msgs)), where)) is not None:
            ledger.quarantine(path, where, "duplicate", f"same messages as {first}")
            continue
        msgs = [{"role": m["role"], "content": ledger.scrub(m["content"])} for m in msgs]  # PII (data_prep.pii)
        rid = rec.get("id")
        tag = rec.get("normalizedTag")
        out.append((str(rid if rid is not None else where), msgs, tag if isinstance(tag, str) else ""))
        ledger.ok()
    return out


def single_turn_split(rid: str, msgs: Messages, tag: str) -> list[dict[str, Any]]:
    """One record per assistant turn: history + that turn (how the official test file is made)."""
    return [{"id": f"{rid}-t{i}", "tag": tag, "messages": msgs[: i + 1]}
            for i, m in enumerate(msgs) if m["role"] == "assistant"]


def build(ctx: BuildContext, eval_fraction: float = EVAL_FRACTION) -> TaskOutput:
    raw_dir, seed = ctx.raw_dir, ctx.seed
    folder = raw_dir / "PsyDTCorpus"
    train_path = next((folder / n for n in TRAIN_FILES if (folder / n).exists()), None)
    if train_path is None:
        raise DataError(f"{folder}: none of {', '.join(TRAIN_FILES)} found (see `make download`)")
    dedup = Dedup()
    tl = ctx.ledger(f"PsyDTCorpus/{train_path.name}")
    dialogues = _records(train_path, tl, dedup)
    ledgers = [tl]
    test_path = folder / TEST_FILE
    evals: list[dict[str, Any]] = []
    if test_path.exists():
        el = ctx.ledger(f"PsyDTCorpus/{TEST_FILE}")
        # the test file is already split per turn; a separate dedup (its records share prefixes by design)
        evals = [{"id": rid, "tag": tag, "messages": msgs} for rid, msgs, tag in _records(test_path, el, Dedup())]
        ledgers.append(el)
        train = dialogues
    else:
        held = [d for d in dialogues if split_of(f"psydt:{d[0]}", seed, eval_fraction) == "eval"]
        if not held and len(dialogues) >= 2:
            held = [min(dialogues, key=lambda d: d[0])]
            tl.note("eval_forced_nonempty")
        if not held and dialogues:
            held = dialogues[:1]
            train = dialogues
            tl.note("eval_overlaps_train")
        else:
            held_ids = {d[0] for d in held}
            train = [d for d in dialogues if d[0] not in held_ids]
        tl.note("eval_derived_from_train_dialogues", len(held))
        for rid, msgs, tag in held:
            evals.extend(single_turn_split(rid, msgs, tag))
    train_recs = [{"id": rid, "tag": tag, "messages": msgs} for rid, msgs, tag in train]
    tl.acc.samples.update({"train": len(train_recs)})
    ledgers[-1].acc.samples.update({"eval": len(evals)})
    return TaskOutput(ctx.task, "sharegpt", {"train": train_recs, "eval": evals}, ledgers)
