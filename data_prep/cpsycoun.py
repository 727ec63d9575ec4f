"""CPsyCoun: CPsyCounD dialogues -> multi-turn sharegpt (train); CPsyCounE cases -> eval.

CPsyCounD `CPsyCoun/CPsyCounD/Data/case_<N>.txt`: utterances separated by blank lines, prefixed
`来访者：` (client) / `心理咨询师：` (counselor); CRLF in 2/3 of files; continuation lines without a
prefix (numbered lists) belong to the previous utterance; stage directions such as `（一段时间后）` are
dropped; consecutive same-speaker utterances are merged. A leading counselor turn and a trailing
client turn are dropped (sharegpt needs user/assistant pairs).

CPsyCounE `CPsyCoun/CPsyCounE/<Topic>/<k>.json`: JSON array of strings `求助者：…` / `支持者：…`.
Every counselor turn with its full history becomes one eval record.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psyfactory.data_prep.common import (
    BuildContext,
    DataError,
    Dedup,
    Ledger,
    TaskOutput,
    decode,
    json_error_kind,
    read_unit,
    text_key,
)

D_DIR = ("CPsyCoun", "CPsyCounD", "Data")
E_DIR = ("CPsyCoun", "CPsyCounE")
# `来访者（姚先生）：`, `来访者1：` also occur
D_PREFIX = re.compile(r"^(来访者|心理咨询师)(?:[（(][^）)]{1,8}[）)]|\d{1,2})?[：:]\s*")
E_PREFIX = re.compile(r"^(求助者|支持者)[：:]\s*")
ROLE = {"来访者": "user", "求助者": "user", "心理咨询师": "assistant", "支持者": "assistant"}
STAGE = re.compile(r"^[（(][^）)]*([）)])?[。.]?$")  # a whole line in parentheses (or an unclosed one)
# A line that opens like `<name>：` but names no known role: another speaker (`咨询师：`, `妈妈：`, `B：`
# in family and couple sessions). Its dialogue is quarantined rather than merged into someone's turn.
SPEAKERISH = re.compile(r"^([\u4e00-\u9fa5A-Za-z]{1,6})[：:]")
# ... unless the word is a heading of the speaker's own text (`建议：…`): noted, kept as a continuation.
DISCOURSE = frozenset([
    "标题", "建议", "方法", "步骤", "首先", "其次", "然后", "最后", "另外", "此外", "注意", "总结", "目标",
    "作业", "练习", "例如", "比如", "问题", "回答", "提示", "备注", "结论", "原因", "结果", "优点",
    "缺点", "理由", "事实", "想法", "感受", "情绪", "行为", "计划", "任务", "反思", "要点", "重点",
])


@dataclass
class Dialogue:
    id: str
    file: Path
    turns: list[tuple[str, str]]  # (role, text), roles alternate


def case_number(path: Path) -> int:
    m = re.fullmatch(r"case_(\d+)\.txt", path.name)
    return int(m.group(1)) if m else -1


def merge_turns(turns: list[tuple[str, str]], ledger: Ledger | None = None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for role, text in turns:
        if out and out[-1][0] == role:
            out[-1] = (role, out[-1][1] + "\n" + text)
            if ledger:
                ledger.note("same_speaker_merged")
        else:
            out.append((role, text))
    return out


def parse_case(text: str, ledger: Ledger | None = None) -> list[tuple[str, str]]:
    """Text of one case file (LF line endings) -> merged (role, text) turns. Raises ValueError."""
    turns: list[tuple[str, str]] = []
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        if STAGE.match(line):
            if ledger:
                ledger.note("stage_direction_dropped")
            continue
        m = D_PREFIX.match(line)
        if m:
            body = line[m.end():].strip()
            while (inner := D_PREFIX.match(body)) is not None:  # "来访者：心理咨询师：…": the inner one speaks
                m, body = inner, body[inner.end():].strip()
                if ledger:
                    ledger.note("double_prefix_resolved")
            body = re.sub(r"^[（(][^）)]{1,20}[）)]\s*", "", body)  # leading inline stage direction
            if body:
                turns.append((ROLE[m.group(1)], body))
            continue
        other = SPEAKERISH.match(line)
        if other and other.group(1) not in DISCOURSE:
            raise ValueError(f"unknown_speaker: line {lineno} starts with {other.group(0)!r}, not 来访者/心理咨询师: "
                             f"{line[:40]!r}")
        if not turns:
            raise ValueError(f"no_speaker_prefix: line {lineno} has no speaker prefix: {line[:40]!r}")
        if other and ledger:
            ledger.note("prefixed_continuation_line")
        role, prev = turns[-1]
        turns[-1] = (role, prev + "\n" + line)
        if ledger:
            ledger.note("continuation_line_joined")
    return merge_turns(turns, ledger)


def to_pairs(turns: list[tuple[str, str]], ledger: Ledger | None = None) -> list[tuple[str, str]]:
    """Trim to user-first, assistant-last alternation."""
    turns = list(turns)
    if turns and turns[0][0] == "assistant":
        turns.pop(0)
        if ledger:
            ledger.note("leading_counselor_turn_dropped")
    if turns and turns[-1][0] == "user":
        turns.pop()
        if ledger:
            ledger.note("trailing_client_turn_dropped")
    return turns


def parse_d(raw_dir: Path, ledger: Ledger, *, scrub: bool = True) -> list[Dialogue]:
    """All CPsyCounD cases in case-number order; each file is read once and accounted; PII scrubbed
    (`scrub=False`: the caller scrubs the turns it uses, as the student task does)."""
    folder = raw_dir.joinpath(*D_DIR)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (see `make download`)")
    files = sorted(folder.glob("*.txt"), key=lambda p: (case_number(p), p.name))
    dedup = Dedup()
    out: list[Dialogue] = []
    from tqdm import tqdm

    for path in tqdm(files, desc="CPsyCounD", unit="file", disable=len(files) < 500, leave=False):
        ledger.read()
        if (raw := read_unit(path, ledger)) is None:
            continue
        try:
            text = decode(raw, path, ledger)
        except DataError as e:
            ledger.quarantine(path, "whole file", "encoding", str(e))
            continue
        if not text.strip():
            ledger.quarantine(path, "whole file", "empty_file")
            continue
        try:
            turns = parse_case(text, ledger)
        except ValueError as e:
            reason, _, detail = str(e).partition(": ")
            ledger.quarantine(path, "whole file", reason, detail)
            continue
        if not to_pairs(turns):
            ledger.quarantine(path, "whole file", "no_dialogue", "no client turn followed by a counselor turn")
            continue
        if (first := dedup.first(text_key(*(t for _, t in turns)), path.name)) is not None:
            ledger.quarantine(path, "whole file", "duplicate", f"same dialogue as {first}")
            continue
        out.append(Dialogue(path.stem, path, [(r, ledger.scrub(t)) for r, t in turns] if scrub else turns))
        ledger.ok()
    return out


def parse_e(raw_dir: Path, ledger: Ledger) -> list[Dialogue]:
    folder = raw_dir.joinpath(*E_DIR)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (see `make download`)")
    files = sorted(folder.glob("*/*.json"), key=lambda p: (p.parent.name, int(p.stem) if p.stem.isdigit() else 10**9, p.name))
    out: list[Dialogue] = []
    for path in files:
        ledger.read()
        if (raw := read_unit(path, ledger)) is None:
            continue
        try:
            text = decode(raw, path, ledger)
            try:
                items = json.loads(text)
            except json.JSONDecodeError as e:
                kind = json_error_kind(text, "]")
                raise ValueError(f"{kind}: {e.msg} at line {e.lineno} column {e.colno}") from None
            if not isinstance(items, list):
                raise ValueError(f"wrong_type: top level is {type(items).__name__}, expected list")
            turns = []
            for i, s in enumerate(items):
                if not isinstance(s, str):
                    raise ValueError(f"wrong_type: item {i} is {type(s).__name__}, expected string")
                m = E_PREFIX.match(s.strip())
                if not m:
                    raise ValueError(f"no_speaker_prefix: item {i} does not start with 求助者：/支持者： ({s[:30]!r})")
                body = s.strip()[m.end():].strip()
                if not body:
                    raise ValueError(f"empty_field: item {i} has an empty utterance")
                turns.append((ROLE[m.group(1)], body))
        except DataError as e:
            ledger.quarantine(path, "whole file", "encoding", str(e))
            continue
        except ValueError as e:
            reason, _, detail = str(e).partition(": ")
            ledger.quarantine(path, "whole file", reason, detail)
            continue
        turns = merge_turns(turns, ledger)
        if turns and turns[0][0] == "assistant":
            turns.pop(0)
            ledger.note("leading_counselor_turn_dropped")
        if not any(r == "assistant" for r, _ in turns):
            ledger.quarantine(path, "whole file", "no_dialogue", "no counselor turn after a client turn")
            continue
        out.append(Dialogue(f"{path.parent.name}/{path.stem}", path, [(r, ledger.scrub(t)) for r, t in turns]))
        ledger.ok()
    return out


def _messages(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": r, "content": t} for r, t in turns]


def build(ctx: BuildContext) -> TaskOutput:
    raw_dir = ctx.raw_dir  # CPsyCounD trains, CPsyCounE evaluates: no seed
    dl = ctx.ledger("CPsyCounD")
    el = ctx.ledger("CPsyCounE")
    train: list[dict[str, Any]] = []
    for d in parse_d(raw_dir, dl):
        train.append({"id": d.id, "messages": _messages(to_pairs(d.turns, dl))})
    evals: list[dict[str, Any]] = []
    for d in parse_e(raw_dir, el):
        topic = d.id.split("/")[0]
        for i, (role, _) in enumerate(d.turns):
            if role == "assistant":
                evals.append({"id": f"{d.id}#{i}", "topic": topic, "messages": _messages(d.turns[: i + 1])})
    dl.acc.samples["train"] = len(train)
    el.acc.samples["eval"] = len(evals)
    return TaskOutput(ctx.task, "sharegpt", {"train": train, "eval": evals}, [dl, el])
