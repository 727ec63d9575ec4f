"""PsyDTCorpus (SoulChat2.0 / PsyDT): multi-turn OpenAI messages -> sharegpt.

Raw (folder `PsyDTCorpus/`): `PsyDTCorpus_train_mulit_turn_packing.json` (sic) -> train and
`PsyDTCorpus_test_single_turn_split.json` -> eval (one record per assistant turn; target = last
assistant message). Record: {id, normalizedTag, messages: [{role, content}]}, system = school persona.

When only the public README example (`PsyDTCorpus_README_example.json`) or no test file is present,
the eval set is derived: held-out train dialogues (seeded) split into one record per assistant turn,
exactly like the official test file. With a single dialogue, that dialogue is used for both and the
accounting notes `eval_overlaps_train` (example data only; never do this with real data).

Besides the sharegpt splits (`psydt_train`, `psydt_eval`: LLaMA-Factory renders them with the model's
template and puts the loss on the counsellor turns), the same dialogues are written as seed 004's
training text (`psydt_train_text`, `psydt_eval_text`): each record's messages rendered as plain ChatML,
`<|im_start|>{role}\n{content}<|im_end|>\n` per message, system included, contents as the file has them
(PII scrubbed unless --no-scrub), the way its author's `lora/training/train.py` formats them
(format_conversation). Trained with LLaMA-Factory's `empty` template and `train_on_prompt: true`, that
text is the whole sequence and every token of it, cut at `cutoff_len`, carries the loss (recipe
seed004-psydt).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psyfactory.data_prep.common import (
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


def chatml_text(messages: Messages) -> str:
    """A dialogue as seed 004's author's training text: `<|im_start|>{role}\n{content}<|im_end|>\n` per
    system, user or assistant message, in order (other roles are skipped, as his script skips them)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages if m.get("role") in ROLES)


def _records(path: Path, ledger: Ledger, dedup: Dedup,
             texts: dict[str, str] | None = None) -> list[tuple[str, Messages, str]]:
    """Validated dialogues (id, cleaned messages, tag); `texts` collects, per id, the record's text as seed 004's
    author rendered it (his contents as the file has them: not stripped; scrubbed like the rest)."""
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
        key = str(rid if rid is not None else where)
        if texts is not None:
            texts[key] = chatml_text([{"role": m["role"], "content": ledger.scrub(m["content"])}
                                      for m in rec["messages"]])
        out.append((key, msgs, tag if isinstance(tag, str) else ""))
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
    train_texts: dict[str, str] = {}
    dialogues = _records(train_path, tl, dedup, train_texts)
    ledgers = [tl]
    test_path = folder / TEST_FILE
    evals: list[dict[str, Any]] = []
    eval_texts: dict[str, str] = {}
    if test_path.exists():
        el = ctx.ledger(f"PsyDTCorpus/{TEST_FILE}")
        # the test file is already split per turn; a separate dedup (its records share prefixes by design)
        evals = [{"id": rid, "tag": tag, "messages": msgs}
                 for rid, msgs, tag in _records(test_path, el, Dedup(), eval_texts)]
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
            turns = single_turn_split(rid, msgs, tag)
            evals.extend(turns)
            eval_texts.update({t["id"]: chatml_text(t["messages"]) for t in turns})
    train_recs = [{"id": rid, "tag": tag, "messages": msgs} for rid, msgs, tag in train]
    tl.acc.samples.update({"train": len(train_recs)})
    ledgers[-1].acc.samples.update({"eval": len(evals)})
    text = {"train_text": [{"id": r["id"], "text": train_texts[r["id"]], "output": ""} for r in train_recs],
            "eval_text": [{"id": r["id"], "text": eval_texts[r["id"]], "output": ""} for r in evals]}
    return TaskOutput(ctx.task, "sharegpt", {"train": train_recs, "eval": evals, **text}, ledgers,
                      split_formats={"train_text": "text", "eval_text": "text"})
