"""The crisis net without a model: `make crisis-detector` trains the learned detector from RAW_DIR,
`make crisis-check FILE=...` runs the net (lexicon OR detector) on any file of texts.

Training data of `sos1k-charngram` (psyfactory.core.detector.DETECTORS):

* positives: SOS-1K high-risk comments; negatives: its low-risk comments (the five folds, read by
  data_prep.sos1k with its quarantine; PII scrubbed as in `make prep`). The folds are the
  cross-validation groups: the threshold is chosen on out-of-fold scores.
* extra negatives: CPsyCounD client turns, and each of their sentences, from dialogues without crisis
  language (no client turn holds a lexicon hit of any status or a word of :data:`CRISIS_WORDS`). SOS-1K
  is all posts from a suicide "tree hole": its low-risk comments talk about death too, so a model that
  saw only them takes any ordinary Chinese text for high risk (`benchmarks/crisis_net_bench.py --set
  extra_weight=0`: 99.9% of the held-out CPsyCounD turns raised). Dialogues are spread over the five
  folds by case number.

The cache key is the sha256 of the training units (texts, labels, folds), the detector's spec and the
lexicon's sha256: `make crisis-detector` retrains when any of them changes, and else says it is up to date.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psyfactory.core import detector as detmod
from psyfactory.core.detector import (
    DEFAULT_DETECTOR,
    Detector,
    Unit,
    load_detector,
    normalize,
    spans,
    spec_of,
)
from psyfactory.core.errors import UserError
from psyfactory.core.files import atomic_write_jsonl
from psyfactory.core.safety import DEFAULT_LEXICON, Lexicon, NetDecision, SafetyNet, load_lexicon

# Words that keep a CPsyCounD dialogue out of the extra negatives (a superset of what the lexicon reads as
# crisis: a dialogue that talks about death or harm at all is not a "non-crisis" example).
CRISIS_WORDS = re.compile("死|自杀|轻生|自残|自伤|割腕|伤害自己|跳楼|跳河|遗书|安眠药|活着|活下去|不想活|"
                          r"结束.{0,4}生命|离开这个世界|解脱|杀")
_SENTENCES = re.compile(r"(?<=[。！？!?；;…\n])")
MIN_SENTENCE = 4  # a sentence shorter than this is not a negative of its own


class DetectorError(UserError):
    """A detector cannot be trained from the raw folder."""


# ------------------------------------------------------------------------------ training data


@dataclass
class TrainingData:
    units: list[Unit]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for u in self.units:
            h.update(json.dumps([u.text, u.positive, u.fold, u.extra, u.lexicon, u.veto], ensure_ascii=False).encode())
            h.update(b"\n")
        return h.hexdigest()


def _lexicon_flags(lex: Lexicon, text: str) -> tuple[bool, bool]:
    """(the lexicon raises the text, the lexicon ruled every crisis word it found out)."""
    hits = lex.scan(text)
    crisis = any(h.status == "crisis" for h in hits)
    return crisis, bool(hits) and not crisis


def sos1k_comments(raw_dir: Path) -> tuple[list[Any], dict[str, Any]]:
    """SOS-1K's comments (data_prep.sos1k, with its quarantine), their text PII-scrubbed as `make prep`
    writes it."""
    from dataclasses import replace

    from psyfactory.data_prep.common import Ledger
    from psyfactory.data_prep.sos1k import read_folds

    ledger = Ledger("crisis-detector", "SOS-1K", raw_dir)
    comments = [replace(c, text=ledger.scrub(c.text)) for c in read_folds(raw_dir, ledger)]
    ledger.ok(len(comments))
    return comments, {"read": ledger.acc.read, "kept": len(comments), "quarantined": dict(ledger.acc.quarantined),
                      "high": sum(c.high for c in comments), "low": sum(not c.high for c in comments)}


def sos1k_units(raw_dir: Path, lex: Lexicon) -> tuple[list[Unit], dict[str, Any]]:
    """SOS-1K comments as training units (high risk positive), folds as given."""
    comments, info = sos1k_comments(raw_dir)
    units = []
    for c in comments:
        crisis, veto = _lexicon_flags(lex, c.text)
        text = normalize(lex.detector_text(c.text))
        units.append(Unit(text, c.high, c.fold, lexicon=crisis, veto=veto))
    return units, info


def client_turns(raw_dir: Path) -> list[tuple[int, list[str]]]:
    """(case number, client turns) of every CPsyCounD dialogue (data_prep.cpsycoun; PII scrubbed)."""
    from psyfactory.data_prep.common import Ledger
    from psyfactory.data_prep.cpsycoun import case_number, parse_d

    ledger = Ledger("crisis-detector", "CPsyCounD", raw_dir)
    return [(case_number(d.file), [t for r, t in d.turns if r == "user"]) for d in parse_d(raw_dir, ledger)]


def without_crisis(turns: list[str], lex: Lexicon) -> bool:
    """No client turn holds a lexicon hit (of any status) or a word of CRISIS_WORDS."""
    return not any(CRISIS_WORDS.search(t) or lex.scan(t) for t in turns)


def turn_units(turn: str, max_chars: int) -> list[str]:
    """A client turn's chunks, and its sentences when it has more than one: negatives at the length of
    a short post too."""
    readable = turn
    out = [normalize(readable[s:e]) for s, e in spans(readable, max_chars)]
    sentences = [normalize(p) for p in _SENTENCES.split(readable) if len(normalize(p)) >= MIN_SENTENCE]
    if len(sentences) > 1:
        out += sentences
    return [u for u in out if u]


def fold_of_case(case: int) -> int:
    return case % 5 + 1


def cpsycound_units(raw_dir: Path, lex: Lexicon, max_chars: int) -> tuple[list[Unit], dict[str, Any]]:
    dialogues = client_turns(raw_dir)
    clean = [(n, turns) for n, turns in dialogues if without_crisis(turns, lex)]
    units, seen = [], set()
    for n, turns in clean:
        for t in turns:
            for u in turn_units(lex.detector_text(t), max_chars):
                if u not in seen:  # 好的。 in many dialogues: once (a copy in another fold would leak)
                    seen.add(u)
                    units.append(Unit(u, False, fold_of_case(n), extra=True))
    return units, {"dialogues": len(dialogues), "dialogues_without_crisis_language": len(clean),
                   "client_turns": sum(len(t) for _, t in clean), "units": len(units)}


def training_data(raw_dir: Path, name: str = DEFAULT_DETECTOR, lexicon: str | Path = DEFAULT_LEXICON) -> TrainingData:
    """The units detector `name` is trained on, from `raw_dir`."""
    spec = spec_of(name)
    lex = load_lexicon(lexicon)
    raw_dir = Path(raw_dir).resolve()
    missing = [s for s, folder in (("sos1k", "SOS-1K"), ("cpsycoun", "CPsyCoun/CPsyCounD/Data"))
               if s in spec.sources and not (raw_dir / folder).is_dir()]
    if missing:
        raise DetectorError(f"{raw_dir}: detector {name} is trained from {', '.join(spec.sources)}; missing: "
                            f"{', '.join(missing)} (`make download TASK=sos1k,cpsycoun RAW_DIR={raw_dir}`)")
    sos, sos_info = sos1k_units(raw_dir, lex)
    extra, extra_info = cpsycound_units(raw_dir, lex, spec.max_chars)
    return TrainingData([*sos, *extra], {"raw_dir": str(raw_dir), "lexicon": str(lex.path),
                                         "lexicon_sha256": lex.sha256, "sos1k": sos_info, "cpsycound": extra_info})


def train_detector(raw_dir: Path, name: str = DEFAULT_DETECTOR, *, force: bool = False, quiet: bool = False,
                   lexicon: str | Path = DEFAULT_LEXICON) -> tuple[Detector, bool]:
    """(the detector for the data in `raw_dir`, whether it was trained now): a cached model of the same
    data, spec and lexicon is reused unless `force`."""
    spec = spec_of(name)
    data = training_data(raw_dir, name, lexicon)
    sha = data.sha256
    key = detmod.cache_key(spec, sha, data.info["lexicon_sha256"])
    path = detmod.model_file(name, key)
    if path.is_file() and not force:
        detmod.use(name, key)
        det = load_detector(name)
        assert det is not None
        if not quiet:
            print(f"[crisis-detector] {name}: up to date ({path}); the training data are unchanged "
                  f"(sha256 {sha[:12]}). Retrain anyway: ARGS=--force")
        return det, False
    if not quiet:
        s, e = data.info["sos1k"], data.info["cpsycound"]
        print(f"[crisis-detector] {name}: {s['high']} high-risk and {s['low']} low-risk SOS-1K comments, "
              f"{e['units']} negative texts from {e['dialogues_without_crisis_language']} CPsyCounD dialogues "
              f"without crisis language; cross-validating by the five folds...", flush=True)
    det = detmod.fit(data.units, spec, {"data_sha256": sha, **data.info})
    path = detmod.save(det, key)
    det = load_detector(name)
    assert det is not None
    if not quiet:
        cv = det.info["cv"]
        print(f"[crisis-detector] {name} -> {path}\n"
              f"  threshold {det.threshold:.4f}: out-of-fold recall on high risk, net {cv['net_recall']:.3f} "
              f"(detector alone {cv['detector_recall']:.3f}); raises on low risk, net "
              f"{cv['net_raise_rate_negatives']:.3f} (detector {cv['detector_raise_rate_negatives']:.3f}); "
              f"detector on the CPsyCounD negatives {cv['detector_raise_rate_extra']:.4f}\n"
              "  (the threshold is chosen on these out-of-fold scores; benchmarks/crisis_net_bench.py has the "
              "nested, held-out figures)")
    return det, True


# ------------------------------------------------------------------------------ crisis-check

TEXT_COLUMNS = ("text", "comment", "content", "post", "message", "input", "prompt", "sentence", "query")
FORMATS = (".tsv", ".csv", ".jsonl", ".txt")


class CheckError(UserError):
    """A file `make crisis-check` cannot read."""


@dataclass
class Row:
    index: int  # 1-based position among the file's records (header excluded)
    line: int  # line of the file it starts on
    text: str | None
    id: str | None = None
    error: str = ""


def _pick_column(columns: list[str], column: str | None, where: str) -> str:
    if column is not None:
        if column not in columns:
            raise CheckError(f"{where}: no column {column!r} (columns: {', '.join(columns) or 'none'})")
        return column
    for c in TEXT_COLUMNS:
        if c in columns:
            return c
    if len(columns) == 1:
        return columns[0]
    raise CheckError(f"{where}: which column holds the texts? COLUMN=<one of {', '.join(columns)}>")


def read_rows(path: Path, column: str | None = None) -> tuple[list[Row], str | None]:
    """(rows, the column used) of a .tsv/.csv (header row), .jsonl (objects) or .txt (a text per line)."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise CheckError(f"{path}: a {suffix or 'file without extension'} file; crisis-check reads "
                         f"{', '.join(FORMATS)}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckError(f"{path}: file not found") from None
    except OSError as e:
        raise CheckError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CheckError(f"{path}: line {line}: not UTF-8 (convert it, e.g. `iconv -f gbk -t utf-8`)") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if suffix == ".txt":
        if column is not None:
            raise CheckError(f"{path}: a .txt file is one text per line; COLUMN goes with .tsv, .csv or .jsonl")
        return [Row(i, i, t) for i, t in enumerate(text.split("\n"), 1) if t.strip()], None
    if suffix == ".jsonl":
        rows, objects = [], []
        for ln, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                rows.append(Row(len(rows) + 1, ln, None, error=f"invalid JSON ({e.msg})"))
                continue
            if not isinstance(obj, dict):
                rows.append(Row(len(rows) + 1, ln, None, error="not a JSON object"))
                continue
            rows.append(Row(len(rows) + 1, ln, None))
            objects.append((rows[-1], obj))
        keys = list(dict.fromkeys(k for _, o in objects for k in o))
        col = _pick_column(keys, column, str(path))
        for row, obj in objects:
            value = obj.get(col)
            row.id = str(obj["id"]) if "id" in obj and col != "id" else None
            if isinstance(value, str) and value.strip():
                row.text = value
            else:
                row.error = f"no text in {col!r}" if value is None or isinstance(value, str) else f"{col!r} is not a string"
        return rows, col
    delimiter = "\t" if suffix == ".tsv" else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL)
    try:
        header = next(reader)
    except StopIteration:
        raise CheckError(f"{path}: empty file (a header row, then a text per row)") from None
    col = _pick_column([h.strip() for h in header], column, str(path))
    at = [h.strip() for h in header].index(col)
    id_at = [h.strip() for h in header].index("id") if "id" in [h.strip() for h in header] and col != "id" else None
    rows = []
    line = reader.line_num
    for cells in reader:
        start, line = line + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue
        row = Row(len(rows) + 1, start, None, id=cells[id_at] if id_at is not None and id_at < len(cells) else None)
        if at >= len(cells):
            row.error = f"{len(cells)} fields, no {col!r}"
        elif not cells[at].strip():
            row.error = f"no text in {col!r}"
        else:
            row.text = cells[at]
        rows.append(row)
    return rows, col


def default_net(detector: str | None = DEFAULT_DETECTOR, lexicon: str | Path = DEFAULT_LEXICON) -> SafetyNet:
    """The net `make crisis-check` uses: the crisis lexicon and, when trained, the default detector."""
    if detector:
        spec_of(detector)
    return SafetyNet(load_lexicon(lexicon), "risk_flag", detector=load_detector(detector) if detector else None,
                     detector_name=detector or None)


def decision_record(row: Row, d: NetDecision | None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": row.index, "line": row.line, **({"id": row.id} if row.id is not None else {})}
    if d is None:
        return {**out, "raised": None, "skipped": row.error}
    rec = d.record()
    for k in ("raised", "field", "model", "value", "class"):
        rec.pop(k, None)
    return {**out, "raised": d.found or "none", **rec}


@dataclass
class CheckResult:
    out: Path
    column: str | None
    counts: dict[str, Any]
    records: list[dict[str, Any]]


def check_file(path: Path, column: str | None = None, net: SafetyNet | None = None,
               out: Path | None = None) -> CheckResult:
    """The net on every text of `path`; one decision per record to `out` (default `<name>.crisis.jsonl`
    beside it)."""
    path = Path(path)
    net = net or default_net()
    rows, col = read_rows(path, column)
    decisions = [net.decide(None, r.text) if r.text is not None else None for r in rows]
    records = [decision_record(r, d) for r, d in zip(rows, decisions, strict=True)]
    out = out or path.with_name(f"{path.stem}.crisis.jsonl")
    atomic_write_jsonl(out, records)
    done = [d for d in decisions if d is not None]
    fired = Counter("+".join(d.fired) for d in done if d.fired)
    counts = {
        "texts": len(done), "skipped": len(rows) - len(done),
        "raised": sum(d.found is not None for d in done),
        "by_class": dict(Counter(d.found for d in done if d.found).most_common()),
        "lexicon_only": fired.get("lexicon", 0), "detector_only": fired.get("detector", 0),
        "both": fired.get("lexicon+detector", 0),
        "reports": sum(any(h.status == "report" for h in d.hits) for d in done),
        "negated": sum(any(h.status == "negated" for h in d.hits) for d in done),
        "excluded": sum(any(h.status == "excluded" for h in d.hits) for d in done),
        "detector_vetoed": sum(bool(d.detector and d.detector.vetoed) for d in done),
        "detector_not_scored": sum(bool(d.detector and d.detector.score is None) for d in done),
        "net": net.describe(), "detector": net.detector is not None,
    }
    return CheckResult(out, col, counts, records)


def format_counts(res: CheckResult, path: Path) -> str:
    c = res.counts
    by = ", ".join(f"{k} {v}" for k, v in c["by_class"].items())
    lines = [f"crisis-check: {c['texts']} texts in {path}{f' (column {res.column})' if res.column else ''} -> {res.out}",
             f"net: {c['net']}",
             f"raised: {c['raised']}{f' ({by})' if by else ''}; none: {c['texts'] - c['raised']}",
             f"  fired: lexicon only {c['lexicon_only']}, detector only {c['detector_only']}, both {c['both']}",
             f"  seen, not raised by the lexicon: about someone else {c['reports']}, negated {c['negated']}, "
             f"figures of speech / accidents / benign {c['excluded']}"]
    if c["detector"]:
        lines.append(f"  detector: not scored (no Chinese text or no known n-gram) {c['detector_not_scored']}, "
                     f"chunks left to the lexicon's ruling {c['detector_vetoed']}")
    if c["skipped"]:
        reasons = Counter(r["skipped"] for r in res.records if r.get("skipped"))
        lines.append(f"skipped: {c['skipped']} (" + ", ".join(f"{k}: {v}" for k, v in reasons.most_common(5)) + ")")
    return "\n".join(lines)
