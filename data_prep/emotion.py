"""dair-ai Emotion: `text;label` lines -> instruction -> one label word (alpaca).

Raw `emotion/{train,val,test}.txt`: no header, LF, lowercase; split on the LAST ';'.
train -> train, test -> eval, val -> val (registered as `emotion_val`).
Exact duplicate lines are removed; texts with conflicting labels inside one file are quarantined
(every copy: the label is ambiguous). Texts shared between splits are counted, not removed.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from psyfactory.data_prep.common import (
    MAX_RECORD_BYTES,
    BuildContext,
    DataError,
    Ledger,
    TaskOutput,
    decode,
    read_bytes,
)

LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")  # HF class ids 0..5
FILES = {"train": "train.txt", "eval": "test.txt", "val": "val.txt"}
INSTRUCTION = ("Classify the emotion expressed in the text. Answer with exactly one word: "
               "sadness, joy, love, anger, fear, or surprise.")


def parse_file(path: Path, ledger: Ledger) -> list[tuple[str, str, int]]:
    """(text, label, line) for every valid, non-duplicate line, in file order."""
    raw = read_bytes(path)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        ledger.note("bom_stripped")
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # final newline
    rows: list[tuple[str, str, int]] = []
    for lineno, b in enumerate(lines, 1):
        ledger.read()
        if b.endswith(b"\r"):
            b = b[:-1]
            ledger.note("crlf_normalised")
        if len(b) > MAX_RECORD_BYTES:
            ledger.quarantine(path, f"line {lineno}", "record_too_large", f"{len(b)} bytes > {MAX_RECORD_BYTES}")
            continue
        try:
            line = decode(b, path)
        except DataError as e:
            ledger.quarantine(path, f"line {lineno}", "encoding", str(e).split(": ", 2)[-1])
            continue
        if not line.strip():
            ledger.quarantine(path, f"line {lineno}", "empty_line")
            continue
        text, sep, label = line.rpartition(";")
        text, label = text.strip(), label.strip().lower()
        if not sep:
            ledger.quarantine(path, f"line {lineno}", "missing_field", "no ';' separating text and label")
        elif not text:
            ledger.quarantine(path, f"line {lineno}", "empty_field", "text is empty")
        elif label not in LABELS:
            ledger.quarantine(path, f"line {lineno}", "unknown_label", f"label {label!r}")
        else:
            rows.append((text, label, lineno))
    # duplicates: same text+label -> keep the first; same text, different labels -> quarantine all
    by_text: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for r in rows:
        by_text[r[0]].append(r)
    kept: list[tuple[str, str, int]] = []
    for group in by_text.values():
        if len({lab for _, lab, _ in group}) > 1:
            labs = ", ".join(f"line {ln}: {lab}" for _, lab, ln in group)
            for _, _, ln in group:
                ledger.quarantine(path, f"line {ln}", "conflicting_label", labs)
            ledger.note("conflicting_texts")
            continue
        kept.append(group[0])
        for _, _, ln in group[1:]:
            ledger.quarantine(path, f"line {ln}", "duplicate", f"same line as line {group[0][2]}")
    kept.sort(key=lambda r: r[2])
    ledger.ok(len(kept))
    return kept


def sample(text: str, label: str, split: str, line: int) -> dict[str, Any]:
    return {"id": f"emotion-{split}-{line}", "system": "", "instruction": INSTRUCTION, "input": text, "output": label}


def build(ctx: BuildContext) -> TaskOutput:
    raw_dir = ctx.raw_dir  # official splits: no seed
    splits: dict[str, list[dict[str, Any]]] = {}
    ledgers: list[Ledger] = []
    texts: dict[str, set[str]] = {}
    for split, name in FILES.items():
        lg = ctx.ledger(f"emotion/{name}")
        rows = parse_file(raw_dir / "emotion" / name, lg)
        splits[split] = [sample(lg.scrub(t), lab, split, ln) for t, lab, ln in rows]  # PII (data_prep.pii)
        texts[split] = {t for t, _, _ in rows}
        lg.acc.samples[split] = len(rows)
        ledgers.append(lg)
    ledgers[1].note("texts_also_in_train", len(texts["eval"] & texts["train"]))
    ledgers[2].note("texts_also_in_train", len(texts["val"] & texts["train"]))
    return TaskOutput(ctx.task, "alpaca", splits, ledgers)
