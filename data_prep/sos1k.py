"""SOS-1K (Qi et al., IEEE SMC 2024): Chinese Weibo comments with an expert-reviewed suicide-risk level
(0-10) and a high / low risk split -> an eval-only risk task: comment -> the student schema's `risk_flag`
(high risk -> `suicidal`, low risk -> `none`), each record keeping its level and fold in `meta`.

Raw `SOS-1K/fold{1..5}.tsv` (header `comment<TAB>myLabel`, levels 0-10) and
`SOS-1K/fold{1..5}_twoClass.tsv` (header `comment<TAB>twoClass`, 1 = high risk, 0 = low risk): the binary
file of a fold holds the same comments, line for line. A unit is one line of a fine-grained fold read
with the same line of its binary fold (a binary line without a partner is a unit too). Quarantined:
a line without a tab (`missing_field`), an empty comment (`empty_field`), a level outside 0-10 or a
risk other than 0/1 (`unknown_label`), a line whose comment differs between the two files or that
has no partner (`fold_mismatch`), a line over MAX_RECORD_BYTES; a comment seen before (in any fold)
with the same labels is a `duplicate`, with other labels every copy is a `conflicting_label`.
Level and high/low risk are kept as the files give them, even where they disagree (a level-0 comment
marked high risk): the counts are in the accounting notes.

Eval only (`psy.eval_only`): the folds measure how a model, the crisis net and both find high-risk
posts; the crisis detector (psyfactory.crisis) is trained on the same folds, cross-validated by them.
The prompt is the student task's instruction, so that a student run is evaluated as it was trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
from psyfactory.data_prep.student import STUDENT_INSTRUCTION

SOURCES = "SOS-1K"
FOLDER = "SOS-1K"
FOLDS = (1, 2, 3, 4, 5)
LEVELS = tuple(range(11))
HEADER = {"fine": "comment\tmyLabel", "binary": "comment\ttwoClass"}
HIGH, LOW = "suicidal", "none"  # risk_flag of a high-risk / low-risk comment


def fold_files(fold: int) -> tuple[str, str]:
    """(fine-grained, binary) file names of a fold."""
    return f"fold{fold}.tsv", f"fold{fold}_twoClass.tsv"


@dataclass(frozen=True)
class Comment:
    text: str  # as in the file (surrounding space stripped; PII not yet scrubbed)
    level: int  # 0-10
    high: bool  # the binary file's high-risk mark
    fold: int
    line: int  # line in the fine-grained file (the header is line 1)

    @property
    def risk_flag(self) -> str:
        return HIGH if self.high else LOW

    @property
    def id(self) -> str:
        return f"sos1k-f{self.fold}-{self.line}"


def _lines(path: Path, header: str, ledger: Ledger) -> list[str]:
    """The data lines of one TSV file (header checked and dropped, CRLF and BOM handled)."""
    text = decode(read_bytes(path), path, ledger)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0].strip() != header:
        got = lines[0][:60] if lines else "(empty file)"
        raise DataError(f"{path}: line 1: expected the header {header!r} (tab-separated), got {got!r}")
    return lines[1:]


def _field(line: str, labels: tuple[int, ...]) -> tuple[str, int] | tuple[str, str]:
    """(comment, label) of one data line, or ("", reason: detail) when it is bad."""
    text, sep, label = line.rpartition("\t")
    if not sep:
        return "", "missing_field: no tab between the comment and its label"
    text = text.strip()
    if not text:
        return "", "empty_field: the comment is empty"
    try:
        value = int(label.strip())
    except ValueError:
        value = -1
    if value not in labels:
        return "", f"unknown_label: label {label.strip()!r} (expected {labels[0]}-{labels[-1]})"
    return text, value


def read_fold(raw_dir: Path, fold: int, ledger: Ledger) -> list[Comment]:
    """Every valid line of one fold, its two files read side by side; the rest is quarantined."""
    fine_name, binary_name = fold_files(fold)
    fine_path, binary_path = raw_dir / FOLDER / fine_name, raw_dir / FOLDER / binary_name
    fine, binary = _lines(fine_path, HEADER["fine"], ledger), _lines(binary_path, HEADER["binary"], ledger)
    out: list[Comment] = []
    for i in range(max(len(fine), len(binary))):
        ledger.read()
        line = i + 2  # 1-based, after the header
        where = f"line {line}"
        if i >= len(fine):
            ledger.quarantine(binary_path, where, "fold_mismatch", f"{fine_name} has no line {line}")
            continue
        if i >= len(binary):
            ledger.quarantine(fine_path, where, "fold_mismatch", f"{binary_name} has no line {line}")
            continue
        if max(len(fine[i]), len(binary[i])) > MAX_RECORD_BYTES:
            ledger.quarantine(fine_path, where, "record_too_large", f"more than {MAX_RECORD_BYTES} characters")
            continue
        text, level = _field(fine[i], LEVELS)
        if not text:
            reason, _, detail = str(level).partition(": ")
            ledger.quarantine(fine_path, where, reason, detail)
            continue
        other, high = _field(binary[i], (0, 1))
        if not other:
            reason, _, detail = str(high).partition(": ")
            ledger.quarantine(binary_path, where, reason, detail)
            continue
        if other != text:
            ledger.quarantine(fine_path, where, "fold_mismatch",
                              f"the comment differs from line {line} of {binary_name}: {other[:30]!r}")
            continue
        out.append(Comment(text, int(level), bool(high), fold, line))
    return out


def read_folds(raw_dir: Path, ledger: Ledger) -> list[Comment]:
    """The five folds, in fold and line order, duplicates removed (every unit accounted for in `ledger`;
    the caller counts the written ones)."""
    folder = raw_dir / FOLDER
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (`make download TASK=sos1k` fetches the five folds)")
    rows = [c for fold in FOLDS for c in read_fold(raw_dir, fold, ledger)]
    by_text: dict[str, list[Comment]] = {}
    for c in rows:
        by_text.setdefault(" ".join(c.text.split()), []).append(c)
    kept: list[Comment] = []
    for group in by_text.values():
        first = group[0]
        where = lambda c: (ledger.rel(folder / fold_files(c.fold)[0]), f"line {c.line}")  # noqa: E731
        if len({(c.level, c.high) for c in group}) > 1:
            labels = "; ".join(f"{fold_files(c.fold)[0]} line {c.line}: level {c.level}, "
                               f"{'high' if c.high else 'low'}" for c in group)
            for c in group:
                ledger.quarantine(*where(c), "conflicting_label", labels)
            continue
        kept.append(first)
        for c in group[1:]:
            ledger.quarantine(*where(c), "duplicate", f"same comment as {fold_files(first.fold)[0]} line {first.line}")
    kept.sort(key=lambda c: (c.fold, c.line))
    ledger.note("high_risk_below_level_6", sum(c.high and c.level < 6 for c in kept))
    ledger.note("low_risk_at_level_6_or_more", sum(not c.high and c.level >= 6 for c in kept))
    return kept


def record(c: Comment, text: str) -> dict[str, Any]:
    """One eval record: the student instruction, the (scrubbed) comment, the risk_flag answer, and in
    `meta` what the analysis breaks figures down by."""
    return {"id": c.id, "system": "", "instruction": STUDENT_INSTRUCTION, "input": text,
            "output": json.dumps({"risk_flag": c.risk_flag}, ensure_ascii=False),
            "meta": {"fold": c.fold, "level": c.level, "risk": "high" if c.high else "low"}}


def build(ctx: BuildContext) -> TaskOutput:
    ledger = ctx.ledger(SOURCES)
    comments = read_folds(ctx.raw_dir, ledger)
    rows = [record(c, ledger.scrub(c.text)) for c in comments]  # PII (data_prep.pii)
    ledger.ok(len(rows))
    ledger.acc.samples["eval"] = len(rows)
    ledger.acc.classes = {"eval": {HIGH: sum(c.high for c in comments), LOW: sum(not c.high for c in comments)}}
    return TaskOutput(ctx.task, "alpaca", {"eval": rows}, [ledger])
