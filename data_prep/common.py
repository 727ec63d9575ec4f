"""Shared machinery for every source: decoding, accounting, quarantine, dedup, splits, writing.

Every raw *unit* (a JSON record, a text line, a dialogue file) that a parser reads is counted once in
`Accounting.read` and ends up either in `written` (it produced output samples) or in `quarantined`
under a reason. `Accounting.check()` enforces read == written + sum(quarantined).
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psyfactory.core.errors import DataError

BOM = "\ufeff"
SPLITS = ("train", "eval")
# A unit (a line, a JSON record, a dialogue file) larger than this is quarantined (`record_too_large`):
# the largest real record is ~40 KB (a LongEmotion case); a 20 MB "record" is a broken file, not data.
MAX_RECORD_BYTES = 1 << 20

# dataset_info.json entry bodies (LLaMA-Factory 0.9.5), keyed by our format name.
SHAREGPT_INFO: dict[str, Any] = {
    "formatting": "sharegpt",
    "columns": {"messages": "messages"},
    "tags": {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    },
}
ALPACA_INFO: dict[str, Any] = {  # formatting defaults to alpaca in LLaMA-Factory
    "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"},
}
# Pre-rendered training text (a whole dialogue in its chat format, seed 004's): the text is the prompt, the
# response is empty. With LLaMA-Factory's `empty` template (adds nothing) and `train_on_prompt: true`, every
# token of the text carries the loss and nothing is added to it.
TEXT_INFO: dict[str, Any] = {"columns": {"prompt": "text", "response": "output"}}
FORMATS = {"sharegpt": SHAREGPT_INFO, "alpaca": ALPACA_INFO, "text": TEXT_INFO}


REPLY_RULES = ("mean", "all", "any")


@dataclass(frozen=True)
class PrepOptions:
    """Switches of one `make prep` (recorded in each task's accounting)."""

    scrub: bool = True  # PII scrubbing (data_prep.pii) in every task; --no-scrub turns it off
    oversample_risk: int = 1  # student: each train item whose risk_flag is not none appears this many times
    reply_rule: str = "mean"  # student: how the counselor-reply length rule applies to an item (REPLY_RULES)
    eval_share: float | None = None  # student: the share held out for eval (None: the parser's default)

    def __post_init__(self) -> None:
        if self.eval_share is not None and not 0 < self.eval_share < 1:
            raise DataError(f"eval share {self.eval_share!r}: a fraction between 0 and 1")
        if isinstance(self.oversample_risk, bool) or not isinstance(self.oversample_risk, int) or self.oversample_risk < 1:
            raise DataError(f"--oversample-risk {self.oversample_risk!r}: a whole number >= 1 (1 = off)")
        if self.reply_rule not in REPLY_RULES:
            raise DataError(f"--reply-rule {self.reply_rule!r}; valid: {', '.join(REPLY_RULES)}")


@dataclass(frozen=True)
class BuildContext:
    """Everything a parser's `build(ctx)` gets: the task it builds (its name is the output's), the raw
    folder, the split seed, the prep options, and for teacher-labelled tasks the teacher."""

    task: str
    raw_dir: Path
    seed: int
    options: PrepOptions = field(default_factory=PrepOptions)
    teacher: Any = None
    dataset_dir: Path | None = None

    def ledger(self, source: str, root: Path | None = None) -> Ledger:
        """Accounting and quarantine for one source of this task (PII scrubbing as the options say)."""
        return Ledger(self.task, source, self.raw_dir if root is None else root, scrub=self.options.scrub)


@dataclass
class Quarantined:
    source: str
    file: str
    where: str  # "line 12", "record 3 (line 40)", "whole file"
    reason: str  # short machine-readable key, e.g. "missing_field", "truncated_json"
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "file": self.file, "where": self.where, "reason": self.reason,
                "detail": self.detail}


@dataclass
class Accounting:
    """Per-source bookkeeping: read = written + quarantined (by reason)."""

    task: str
    source: str
    read: int = 0
    written: int = 0
    quarantined: Counter = field(default_factory=Counter)
    samples: Counter = field(default_factory=Counter)  # split -> output samples
    notes: Counter = field(default_factory=Counter)  # quirks fixed on the way (crlf, bom, merged turns...)
    skipped: str = ""  # non-empty: the whole source was skipped, and why
    labelled_by: dict[str, Any] | None = None  # teacher tasks: who labelled it (model, prompt, decoding)
    pii_scrub: bool = True  # whether PII was scrubbed (the --no-scrub switch)
    pii: Counter = field(default_factory=Counter)  # identifiers replaced, per type (data_prep.pii.TYPES)
    steps: dict[str, int] = field(default_factory=dict)  # filter steps in order -> units kept (student)
    classes: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> samples (student)
    options: dict[str, Any] = field(default_factory=dict)  # task-specific prep options in force

    def check(self) -> None:
        if self.read != self.written + sum(self.quarantined.values()):
            raise AssertionError(
                f"accounting broken for {self.task}/{self.source}: read {self.read} != written "
                f"{self.written} + quarantined {sum(self.quarantined.values())}"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "source": self.source, "read": self.read, "written": self.written,
            "quarantined": dict(sorted(self.quarantined.items())),
            "samples": dict(sorted(self.samples.items())), "notes": dict(sorted(self.notes.items())),
            "skipped": self.skipped, **({"labelled_by": self.labelled_by} if self.labelled_by else {}),
            "pii_scrub": self.pii_scrub, "pii": dict(sorted(self.pii.items())),
            **({"steps": self.steps} if self.steps else {}), **({"classes": self.classes} if self.classes else {}),
            **({"options": self.options} if self.options else {}),
        }


class Ledger:
    """Accounting plus the quarantine list for one source."""

    def __init__(self, task: str, source: str, root: Path | None = None, *, scrub: bool = True) -> None:
        from psyfactory.data_prep.pii import Scrubber

        self.acc = Accounting(task, source)
        self.items: list[Quarantined] = []
        self.root = root
        self.scrubber = Scrubber(enabled=scrub, counts=self.acc.pii)
        self.acc.pii_scrub = self.scrubber.enabled

    def scrub(self, text: str) -> str:
        """`text` with PII replaced (counted per type in this source's accounting); as is with --no-scrub."""
        return self.scrubber.scrub(text)

    def rel(self, path: Path | str) -> str:
        path = Path(path)
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return str(path)

    def read(self, n: int = 1) -> None:
        self.acc.read += n

    def ok(self, n: int = 1) -> None:
        self.acc.written += n

    def quarantine(self, file: Path | str, where: str, reason: str, detail: str = "") -> None:
        self.acc.quarantined[reason] += 1
        self.items.append(Quarantined(self.acc.source, self.rel(file), where, reason, detail))

    def reject(self, file: Path | str, where: str, reason: str, detail: str = "") -> None:
        """A unit counted as written by a parser is dropped by a later stage (filter, teacher)."""
        self.acc.written -= 1
        self.quarantine(file, where, reason, detail)

    def note(self, key: str, n: int = 1) -> None:
        if n:
            self.acc.notes[key] += n


# ----------------------------------------------------------------------------------------- decoding
def decode(raw: bytes, path: Path | str, ledger: Ledger | None = None) -> str:
    """UTF-8 (BOM stripped, CRLF/CR normalised to LF). Anything else raises DataError.

    GBK input is detected and named in the error rather than silently transcoded.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        if ledger:
            ledger.note("bom_stripped")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        hint = ""
        try:
            raw.decode("gb18030")
            hint = " (looks like GBK/GB18030; convert with `iconv -f gbk -t utf-8`)"
        except UnicodeDecodeError:
            pass
        raise DataError(f"{path}: line {line}: not valid UTF-8 at byte {e.start}{hint}") from None
    if "\r" in text:
        if ledger:
            ledger.note("crlf_normalised")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _special(path: Path) -> bool:
    """A pipe, device or socket: reading one blocks forever or never ends."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode)


def read_bytes(path: Path) -> bytes:
    """A whole source file; a missing, unreadable or non-regular one is a DataError naming it."""
    try:
        if _special(path):
            raise DataError(f"{path}: not a regular file (a pipe, device or socket); replace it with the data file")
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (see `make download`)") from None
    except OSError as e:  # a directory, a dangling symlink, no permission
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e.strerror})") from None


def read_unit(path: Path, ledger: Ledger) -> bytes | None:
    """One file that is one unit of a source (a dialogue): its bytes, or None after quarantining it
    (unreadable: a directory or dangling symlink with the file's name; larger than MAX_RECORD_BYTES)."""
    try:
        if _special(path):  # a FIFO or device would block or never end
            ledger.quarantine(path, "whole file", "not_a_regular_file", "a pipe, device or socket, not a file")
            return None
        if path.stat().st_size > MAX_RECORD_BYTES:
            ledger.quarantine(path, "whole file", "record_too_large",
                              f"{path.stat().st_size} bytes > {MAX_RECORD_BYTES}")
            return None
        return path.read_bytes()
    except OSError as e:
        ledger.quarantine(path, "whole file", "unreadable", f"{type(e).__name__}: {e.strerror}")
        return None


def read_text(path: Path, ledger: Ledger | None = None) -> str:
    return decode(read_bytes(path), path, ledger)


def iter_json_array(text: str, path: Path | str) -> Iterator[tuple[int, int, Any | None, str]]:
    """Yield (index, line, obj, error) for each element of a top-level JSON array.

    Elements are parsed one by one, so a truncated file still yields every complete element and then
    a single ('truncated_json') error item instead of losing the whole file. A file that does not
    start with '[' raises DataError.
    """
    dec = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    pos = ws.match(text, 0).end()
    if pos >= len(text) or text[pos] != "[":
        raise DataError(f"{path}: line 1: expected a JSON array ('[') at top level")
    pos = ws.match(text, pos + 1).end()
    if pos < len(text) and text[pos] == "]":
        return
    idx, line, counted = 0, 1, 0  # line number of `counted`, advanced incrementally (no O(n^2) recount)

    def line_at(p: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, p)
        counted = p
        return line

    while True:
        start_line = line_at(pos)
        if pos >= len(text):
            yield idx, start_line, None, "truncated_json: file ends inside the array"
            return
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            err_line = start_line + text.count("\n", pos, e.pos)
            yield idx, start_line, None, f"{json_error_kind(text, ']')}: {e.msg} at line {err_line}"
            return
        if end - pos > MAX_RECORD_BYTES:
            yield idx, start_line, None, f"record_too_large: {end - pos} characters > {MAX_RECORD_BYTES}"
        else:
            yield idx, start_line, obj, ""
        idx += 1
        pos = ws.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = ws.match(text, pos + 1).end()
            continue
        if pos < len(text) and text[pos] == "]":
            return
        yield idx, line_at(pos), None, f"truncated_json: expected ',' or ']' at line {line_at(pos)}"
        return


def json_error_kind(text: str, closer: str) -> str:
    """'truncated_json' when the text does not end with its closing bracket (a cut-off file or
    line), else 'invalid_json'."""
    return "invalid_json" if text.rstrip().endswith(closer) else "truncated_json"


def load_json_array(path: Path, ledger: Ledger) -> Iterator[tuple[str, Any]]:
    """Decode `path` and yield (where, element) for its array; bad tail elements are quarantined."""
    from tqdm import tqdm

    text = read_text(path, ledger)
    items = iter_json_array(text, path)
    for idx, line, obj, err in tqdm(items, desc=path.name, unit="rec", leave=False, disable=len(text) < 2_000_000):
        ledger.read()
        where = f"record {idx} (line {line})"
        if err:
            reason, _, detail = err.partition(": ")
            ledger.quarantine(path, where, reason, detail)
            continue
        yield where, obj


# ------------------------------------------------------------------------------------ field checks
def get_str(rec: Any, key: str, *, allow_empty: bool = False) -> str:
    """Return rec[key] as a stripped string or raise KeyError/TypeError/ValueError with the field name."""
    if not isinstance(rec, dict):
        raise TypeError(f"record is {type(rec).__name__}, expected object")
    if key not in rec or rec[key] is None:
        raise KeyError(key)
    val = rec[key]
    if not isinstance(val, str):
        raise TypeError(f"field '{key}' is {type(val).__name__}, expected string")
    val = val.strip()
    if not val and not allow_empty:
        raise ValueError(f"field '{key}' is empty")
    return val


def field_problem(exc: Exception) -> tuple[str, str]:
    """Map a get_str-style exception to (reason, detail)."""
    if isinstance(exc, KeyError):
        return "missing_field", f"missing field '{exc.args[0]}'"
    if isinstance(exc, TypeError):
        return "wrong_type", str(exc)
    return "empty_field", str(exc)


# ------------------------------------------------------------------------------- dedup and splits
def text_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def hash_unit(key: str, seed: int) -> float:
    """A number in [0, 1) from seed and key (sha256): the same on every machine and every rerun."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:15], 16) / float(1 << 60)


def split_of(key: str, seed: int, eval_fraction: float) -> str:
    """Deterministic split from a stable key: same answer on every machine and every rerun."""
    return "eval" if hash_unit(key, seed) < eval_fraction else "train"


def split_by_count(keys: Iterable[str], seed: int, eval_share: float, prefix: str = "") -> dict[str, str]:
    """key -> "train" | "eval": exactly round(eval_share x n) keys in eval (at least one, and at least one
    left in train, when there are two or more), those with the smallest `hash_unit`. Seeded and
    order-independent: reruns give the same split, 85/15 of 100 is 85/15."""
    ranked = sorted(set(keys), key=lambda k: (hash_unit(f"{prefix}{k}", seed), k))
    n = len(ranked)
    n_eval = 0 if n < 2 else min(n - 1, max(1, round(eval_share * n)))
    return {k: "eval" if i < n_eval else "train" for i, k in enumerate(ranked)}


def stratified_split(classes: dict[str, str], seed: int, eval_fraction: float, prefix: str = "") -> dict[str, str]:
    """key -> "train" | "eval", stratified on the class of each key: per class, round(fraction x n)
    keys, at least one, go to eval (those with the smallest `hash_unit`), and at least one stays in train
    when the class has two or more; a class with a single key puts it in eval, so that eval holds every
    class present. Seeded and order-independent: reruns give the same split."""
    by_class: dict[str, list[str]] = {}
    for key, cls in classes.items():
        by_class.setdefault(cls, []).append(key)
    out: dict[str, str] = {}
    for keys in by_class.values():
        ranked = sorted(keys, key=lambda k: (hash_unit(f"{prefix}{k}", seed), k))
        n_eval = 1 if len(ranked) == 1 else min(len(ranked) - 1, max(1, round(eval_fraction * len(ranked))))
        out.update({k: "eval" if i < n_eval else "train" for i, k in enumerate(ranked)})
    return out


class Dedup:
    """Exact-duplicate filter on a normalised text key; duplicates are quarantined with a pointer."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def first(self, key: str, where: str) -> str | None:
        """None if new, else the location of the first occurrence."""
        if key in self.seen:
            return self.seen[key]
        self.seen[key] = where
        return None


# --------------------------------------------------------------------------------------- outputs
@dataclass
class TaskOutput:
    task: str
    fmt: str  # "sharegpt" | "alpaca"
    splits: dict[str, list[dict[str, Any]]]
    ledgers: list[Ledger]
    extra_files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # name -> jsonl records
    split_formats: dict[str, str] = field(default_factory=dict)  # a split in another format than `fmt`

    @property
    def accounting(self) -> list[Accounting]:
        return [lg.acc for lg in self.ledgers]


def write_task(out: TaskOutput, dataset_dir: Path, commit: Any) -> None:
    """Stage splits, quarantine, extra files and accounting of one task (psyfactory.data_prep.commit.Commit)."""
    for lg in out.ledgers:
        lg.acc.check()
    task_dir = dataset_dir / "data" / out.task
    for split, records in out.splits.items():
        commit.write_jsonl(task_dir / f"{split}.jsonl", records)
    commit.write_jsonl(task_dir / "quarantine.jsonl", [q.as_dict() for lg in out.ledgers for q in lg.items])
    for name, records in out.extra_files.items():
        commit.write_jsonl(task_dir / name, records)
    commit.write_json(task_dir / "accounting.json", [a.as_dict() for a in out.accounting])


def info_entries(task: str, fmt: str, splits: Iterable[str],
                 split_formats: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    formats = split_formats or {}
    return {f"{task}_{s}": {"file_name": f"data/{task}/{s}.jsonl", **FORMATS[formats.get(s, fmt)]} for s in splits}
