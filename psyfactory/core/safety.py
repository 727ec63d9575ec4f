"""Crisis safety net: a curated crisis lexicon, and optionally a learned detector beside it, matched
against the INPUT of a label task.

The lexicon is data (`evaluation/safety/crisis_lexicon.yaml`, its header documents the rules); this
module loads it and matches it. One matcher serves data prep (`data_prep/lexicon.py` raises the
teacher's risk_flag) and inference (the `json_labels` eval plugin, `make chat`, `make chat-gguf`,
`make ask`, `make crisis-check`).

    lex = load_lexicon()                       # the default file, cached
    lex.scan("我同学说他想自杀。我不想活了")      # every hit with its status
    lex.detect("我不想活了")                     # ("suicidal", Hit) or ("none", None)
    net = SafetyNet(lex, "risk_flag", detector=load_detector("sos1k-charngram"), detector_name="sos1k-charngram")
    decision = net.decide(model_labels, input_text)   # may raise "none" to a class, never lowers

The net fires when the lexicon finds the writer's crisis language OR the detector
(psyfactory.core.detector) scores a chunk of the text at or above its threshold. The lexicon's
rulings stand for the detector too: a chunk whose crisis words the lexicon found and ruled out
(negated, a figure of speech, about someone else) and where it found none of the writer's own is not
scored by the detector, and the lexicon's figures of speech, accidents and benign contexts (累死了,
不小心…, 预防自杀) are blanked out of what the detector reads. A net that names a detector which is not
trained is the lexicon alone, and says so (:meth:`SafetyNet.describe`).

Each hit has a status: ``crisis`` (the writer's own crisis language: it counts), ``negated`` (我从没
想过自杀, I would never kill myself), ``excluded`` (a figure of speech, an accident or a benign
context: 想死你了, killed myself laughing, 预防自杀讲座) or ``report`` (about someone else:
我同学说他想自杀; recorded, never raised).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from psyfactory.core.errors import ConfigError, format_validation_error
from psyfactory.core.paths import EVALUATION_DIR, repo_path

if TYPE_CHECKING:
    from psyfactory.core.detector import Detector, DetectorResult

DEFAULT_LEXICON = EVALUATION_DIR / "safety" / "crisis_lexicon.yaml"
Status = Literal["crisis", "negated", "excluded", "report"]
_CJK = re.compile(r"[\u3400-\u9fff]")
_FLAGS = re.IGNORECASE


# ------------------------------------------------------------------------------ the file


class _Lang(BaseModel):
    model_config = ConfigDict(extra="forbid")
    zh: list[str] = []
    en: list[str] = []


class _Negation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cues: list[str]  # regexes
    fillers: list[str] = []  # plain words
    not_negation: list[str] = []  # plain words (zh A-not-A questions)
    after: list[str] = []  # regexes anchored at the end of the hit


class _Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clause_breaks: str
    first: _Lang
    third: _Lang
    object_markers: _Lang = _Lang()
    fillers: _Lang = _Lang()
    report_verbs: _Lang = _Lang()
    inside: dict[Literal["first", "third", "classes"], list[str]] = {}


class _LexiconFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    severity: list[str]
    classes: dict[str, _Lang]
    not_crisis: dict[str, list[str]] = {}
    negation: dict[Literal["zh", "en"], _Negation]
    person: _Person
    skip_speakers: list[str] = []


def _line_map(node: Any, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """{key path: 1-based line} of a composed YAML node tree, for error messages."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _line_map(v, (*path, k.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, (*path, i), out)
    return out


def _where(path: Path, lines: dict[tuple, int], loc: tuple) -> str:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{path}:{lines[loc[:n]]}"
    return str(path)


def _alt(words: list[str], *, escape: bool = True) -> str:
    """An alternation, longest first (so 他们 wins over 他)."""
    items = sorted(words, key=len, reverse=True)
    return "|".join(re.escape(w) if escape else w for w in items)


def _en_words(words: list[str]) -> str:
    """Plain English words/phrases as a word-bounded alternation (inner spaces = any whitespace)."""
    parts = []
    for w in sorted(words, key=len, reverse=True):
        body = r"\s+".join(re.escape(p) for p in w.split())
        parts.append((r"\b" if w[0].isalnum() else "") + body + r"(?![\w])")
    return "|".join(parts)


@dataclass(frozen=True)
class Hit:
    cls: str  # risk class (suicidal, self_harm, violence)
    phrase: str  # the matched text
    start: int
    end: int
    lang: Literal["zh", "en"]
    status: Status = "crisis"
    why: str = ""  # the cue, figure, or person word that decided a non-crisis status

    def brief(self) -> dict[str, str]:
        out = {"class": self.cls, "phrase": self.phrase}
        return {**out, "why": self.why} if self.why else out


@dataclass
class Lexicon:
    """A loaded crisis lexicon (use :func:`load_lexicon`)."""

    path: Path
    sha256: str
    severity: list[str]
    _classes: dict[str, re.Pattern[str]]
    _not_crisis: list[tuple[str, re.Pattern[str]]]
    _neg: dict[str, tuple[re.Pattern[str], re.Pattern[str] | None, list[re.Pattern[str]]]]
    _breaks: re.Pattern[str]
    _markers: dict[str, re.Pattern[str]]
    _third: dict[str, set[str]]
    _objects: set[str]
    _fillers: dict[str, re.Pattern[str]]
    _report_verbs: dict[str, re.Pattern[str] | None]
    _inside_first: re.Pattern[str] | None
    _inside_third: re.Pattern[str] | None
    _inside_classes: set[str]
    _skip: re.Pattern[str] | None
    classes: list[str] = field(default_factory=list)

    # -------------------------------------------------------------- matching
    def readable_text(self, text: str) -> str:
        """The text the net reads: curly quotes straightened, counselor lines dropped."""
        text = text.replace("\u2019", "'").replace("\u2018", "'")
        if self._skip is None:
            return text
        return "\n".join(line for line in text.split("\n") if not self._skip.match(line))

    def scan(self, text: str) -> list[Hit]:
        """Every lexicon hit in `text` (non-overlapping, left to right) with its status."""
        text = self.readable_text(text)
        found: list[tuple[int, int, int, str]] = []  # (start, -length, severity rank, class)
        for cls, rx in self._classes.items():
            for m in rx.finditer(text):
                if m.end() > m.start():
                    found.append((m.start(), -(m.end() - m.start()), self.severity.index(cls), cls))
        found.sort()
        excluded = [(name, m) for name, rx in self._not_crisis for m in rx.finditer(text)]
        hits: list[Hit] = []
        last_end = -1
        for start, neg_len, _, cls in found:
            end = start - neg_len
            if start < last_end:
                continue
            last_end = end
            phrase = text[start:end]
            lang: Literal["zh", "en"] = "zh" if _CJK.search(phrase) else "en"
            hits.append(self._judge(text, Hit(cls, phrase, start, end, lang), excluded))
        return hits

    def not_crisis_spans(self, readable: str) -> list[tuple[int, int]]:
        """(start, end) of every `not_crisis` match (figures of speech, accidents, benign contexts) in a
        readable text: what the learned detector does not read."""
        return sorted((m.start(), m.end()) for _, rx in self._not_crisis for m in rx.finditer(readable) if m.end() > m.start())

    def detector_text(self, text: str, blank: str = "\x00") -> str:
        """The readable text with its `not_crisis` matches blanked out (each character replaced by `blank`,
        which the detector drops): what the learned detector reads, at training and at inference; the
        positions still match the lexicon's hits."""
        readable = self.readable_text(text)
        chars = list(readable)
        for start, end in self.not_crisis_spans(readable):
            chars[start:end] = blank * (end - start)
        return "".join(chars)

    def _judge(self, text: str, hit: Hit, excluded: list[tuple[str, re.Match[str]]]) -> Hit:
        for name, m in excluded:
            if m.start() < hit.end and hit.start < m.end():
                return replace(hit, status="excluded", why=f"{name}: {m.group(0)}")
        clause_start = max((m.end() for m in self._breaks.finditer(text, 0, hit.start)), default=0)
        nxt = self._breaks.search(text, hit.end)
        prefix, suffix = text[clause_start:hit.start], text[hit.end: nxt.start() if nxt else len(text)]
        cue = self._negation(hit.lang, prefix, suffix)
        if cue:
            return replace(hit, status="negated", why=cue)
        who = self._person(hit, prefix)
        if who:
            return replace(hit, status="report", why=who)
        return hit

    def _negation(self, lang: str, prefix: str, suffix: str) -> str:
        """The negation cue that governs the hit, or ''."""
        if lang not in self._neg:
            return ""
        before, not_neg, after = self._neg[lang]
        m = before.search(prefix.rstrip() + (" " if lang == "en" else ""))
        if m:
            cue_span = (m.start(), m.start() + len(m.group("cue")))
            if not_neg is None or not any(q.start() < cue_span[1] and cue_span[0] < q.end()
                                          for q in not_neg.finditer(prefix)):
                return m.group(0).strip()
        for rx in after:
            a = rx.search(suffix)
            if a:
                return a.group(0).strip()
        return ""

    def _person(self, hit: Hit, prefix: str) -> str:
        """The third-person word the hit is about, or '' when it is the writer's."""
        if hit.cls in self._inside_classes:
            if self._inside_third is not None and (m := self._inside_third.search(hit.phrase)):
                return m.group(0)
            if self._inside_first is not None and self._inside_first.search(hit.phrase):
                return ""
        rx = self._markers.get(hit.lang)
        if rx is None:
            return ""
        for m in reversed(list(rx.finditer(prefix))):
            word = m.group(0).lower()
            if word not in self._third[hit.lang]:
                return ""  # the writer (我, I) is the nearest person
            if hit.lang == "zh" and m.start() > 0 and prefix[m.start() - 1] in self._objects:
                continue  # 和他 / 把他: an object, not who speaks
            between = prefix[m.end():]
            verbs = self._report_verbs.get(hit.lang)
            if self._fillers[hit.lang].fullmatch(between) or (verbs is not None and verbs.search(between)):
                return m.group(0)
            return ""
        return ""

    def detect(self, text: str) -> tuple[str, Hit | None]:
        """(the most severe class of the writer's own crisis language, its hit) or ("none", None)."""
        crisis = [h for h in self.scan(text) if h.status == "crisis"]
        if not crisis:
            return "none", None
        best = min(crisis, key=lambda h: self.severity.index(h.cls))
        return best.cls, best


@cache
def load_lexicon(path: str | Path = DEFAULT_LEXICON) -> Lexicon:
    """Load and compile a crisis lexicon file (absolute or relative to the checkout, paths.repo_path); errors name the
    file, line and field."""
    full = repo_path(path)
    try:
        raw = full.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{full}: crisis lexicon not found") from None
    text = raw.decode("utf-8")
    try:
        lines = _line_map(yaml.compose(text)) if text.strip() else {}
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{full}:{mark.line + 1 if mark else '?'}: invalid YAML "
                          f"({getattr(e, 'problem', None) or e})") from None
    try:
        spec = _LexiconFile.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as e:
        loc = tuple(e.errors()[0]["loc"])
        msg = format_validation_error(e, "", list(_LexiconFile.model_fields)).replace("'.", "'")  # no prefix
        raise ConfigError(f"{_where(full, lines, loc)}: {msg}") from None

    def compile_(rx: str, loc: tuple) -> re.Pattern[str]:
        try:
            return re.compile(rx, _FLAGS)
        except re.error as e:
            field_ = ".".join(str(p) for p in loc)
            raise ConfigError(f"{_where(full, lines, loc)}: {field_}: invalid regular expression {rx!r} ({e})") from None

    if sorted(spec.severity) != sorted(spec.classes):
        raise ConfigError(f"{_where(full, lines, ('severity',))}: severity {spec.severity} must list each class of "
                          f"'classes' once ({', '.join(spec.classes)})")
    classes: dict[str, re.Pattern[str]] = {}
    for cls, langs in spec.classes.items():
        entries = [(e, ("classes", cls, lang, i)) for lang in ("zh", "en") for i, e in enumerate(getattr(langs, lang))]
        for e, loc in entries:
            compile_(e, loc)  # each alone, so that an error names its line
        if entries:
            classes[cls] = re.compile("|".join(f"(?:{e})" for e, _ in entries), _FLAGS)
    not_crisis = [(name, compile_(e, ("not_crisis", name, i)))
                  for name, items in spec.not_crisis.items() for i, e in enumerate(items)]
    neg: dict[str, tuple[re.Pattern[str], re.Pattern[str] | None, list[re.Pattern[str]]]] = {}
    for lang, n in spec.negation.items():
        for i, c in enumerate(n.cues):
            compile_(c, ("negation", lang, "cues", i))
        if lang == "zh":
            cue = "|".join(sorted(n.cues, key=len, reverse=True))
            fill = f"(?:{_alt(n.fillers)})*" if n.fillers else ""
            before = re.compile(f"(?P<cue>{cue}){fill}$", _FLAGS)
        else:
            cue = "|".join(sorted(n.cues, key=len, reverse=True))
            fill = rf"(?:\s+(?:{_en_words(n.fillers)}))*" if n.fillers else ""
            before = re.compile(rf"(?P<cue>{cue}){fill}\s+$", _FLAGS)
        not_neg = re.compile(_alt(n.not_negation)) if n.not_negation else None
        neg[lang] = (before, not_neg, [compile_(a, ("negation", lang, "after", i)) for i, a in enumerate(n.after)])
    p = spec.person
    markers = {"zh": re.compile(_alt(p.first.zh + p.third.zh), _FLAGS),
               "en": re.compile(_en_words(p.first.en + p.third.en), _FLAGS)}
    fillers = {"zh": re.compile(f"(?:{_alt(p.fillers.zh)})*" if p.fillers.zh else "", _FLAGS),
               "en": re.compile(rf"(?:\s*(?:{_en_words(p.fillers.en)}))*\s*" if p.fillers.en else r"\s*", _FLAGS)}
    first_in, third_in = p.inside.get("first", []), p.inside.get("third", [])
    skip = (re.compile(rf"\s*(?:{_alt(spec.skip_speakers)})\s*[:：]", _FLAGS) if spec.skip_speakers else None)
    return Lexicon(
        path=full, sha256=hashlib.sha256(raw).hexdigest(), severity=list(spec.severity), _classes=classes,
        _not_crisis=not_crisis, _neg=neg, _breaks=re.compile(f"[{re.escape(p.clause_breaks)}]"), _markers=markers,
        _third={"zh": {w.lower() for w in p.third.zh}, "en": {w.lower() for w in p.third.en}},
        _objects=set(p.object_markers.zh), _fillers=fillers,
        _report_verbs={"zh": re.compile(_alt(p.report_verbs.zh)) if p.report_verbs.zh else None,
                       "en": re.compile(_en_words(p.report_verbs.en), _FLAGS) if p.report_verbs.en else None},
        _inside_first=re.compile(_en_words(first_in), _FLAGS) if first_in else None,
        _inside_third=re.compile(_en_words(third_in), _FLAGS) if third_in else None,
        _inside_classes=set(p.inside.get("classes", [])), _skip=skip, classes=list(spec.severity))


# ------------------------------------------------------------------------------ the net


@dataclass(frozen=True)
class NetDecision:
    """What the net did to one answer. ``model`` is the model's value of the field (None: the answer
    was not a valid label object); ``value`` the final one; ``raised`` whether the net changed it;
    ``hit`` the lexicon's most severe hit of the writer's crisis language, ``detector`` what the
    detector said (None: the net has no trained detector)."""

    field: str
    model: Any
    value: Any
    raised: bool
    hit: Hit | None  # the writer's most severe crisis hit (None: no crisis language)
    hits: list[Hit]
    detector: DetectorResult | None = None

    @property
    def fired(self) -> list[str]:
        """The parts of the net that found crisis: "lexicon", "detector", both or none."""
        return [*(["lexicon"] if self.hit is not None else []),
                *(["detector"] if self.detector is not None and self.detector.fired else [])]

    @property
    def found(self) -> str | None:
        """The class the net alone gives the text (the lexicon's when it fired, else the detector's), or None."""
        if self.hit is not None:
            return self.hit.cls
        return self.detector.cls if self.detector is not None and self.detector.fired else None

    def record(self) -> dict[str, Any]:
        """The per-item / chat record: what was found, by which part, and what it did."""
        out: dict[str, Any] = {"raised": self.raised, "field": self.field, "model": self.model, "value": self.value,
                               "class": self.found, "fired": self.fired,
                               "phrase": self.hit.phrase if self.hit else None}
        if self.detector is not None:
            out["detector"] = self.detector.record()
        for status in ("report", "negated", "excluded"):
            found = [h.brief() for h in self.hits if h.status == status]
            if found:
                out[{"report": "reports", "negated": "negated", "excluded": "excluded"}[status]] = found
        return out

    def why(self) -> str:
        """What fired, in words: the lexicon's phrase and/or the detector's score and n-grams."""
        parts = []
        if self.hit is not None:
            parts.append(f"'{self.hit.phrase}' in the input (lexicon)")
        if self.detector is not None and self.detector.fired:
            parts.append(self.detector.describe())
        return " and ".join(parts)

    def note(self) -> str | None:
        """One line for a chat transcript, or None when there is nothing to say."""
        parts = []
        if self.raised:
            src = ("the answer is not a valid label object, so this value comes from the net alone"
                   if self.model is None else f"the model said {self.model!r}")
            parts.append(f"{self.field} raised to {self.value!r} by the crisis safety net: {self.why()} ({src})")
        elif self.found is not None:
            what = (f"crisis language in the input ('{self.hit.phrase}', {self.hit.cls})" if self.hit is not None
                    else f"crisis in the input by the {self.why()}")
            parts.append(f"{what}; the model's {self.field} {self.model!r} stands")
        reports = [h for h in self.hits if h.status == "report"]
        if reports:
            parts.append("about someone else (not raised): " + ", ".join(f"'{h.phrase}' ({h.cls})" for h in reports))
        return "[safety net] " + "; ".join(parts) if parts else None


@dataclass(frozen=True)
class SafetyNet:
    """The lexicon (and a detector, when one is named and trained) applied to one categorical field of
    a label schema (student: risk_flag). It raises the field from ``none_value`` (or from an invalid
    answer) to the class found in the input; it never changes any other value."""

    lexicon: Lexicon
    field: str
    none_value: str = "none"
    detector: Detector | None = None
    detector_name: str | None = None  # the detector the net names (None: the lexicon alone by design)

    def check(self, allowed: list[Any], where: str) -> None:
        """The field's enum must hold the no-risk value, every lexicon class and the detector's class."""
        raises = [*self.lexicon.classes, *([self.detector.spec.cls] if self.detector is not None else [])]
        missing = [c for c in dict.fromkeys([self.none_value, *raises]) if c not in allowed]
        if missing:
            raise ConfigError(f"{where}: the crisis net ({self.lexicon.path.name}"
                              f"{f' + {self.detector.name}' if self.detector is not None else ''}) raises "
                              f"{self.field} to {', '.join(map(repr, missing))}, which the schema does not allow "
                              f"({', '.join(map(repr, allowed))})")

    def describe(self) -> str:
        """The net in one line: its lexicon and its detector, or why it has none."""
        lex = f"lexicon {self.lexicon.path.name} (sha256 {self.lexicon.sha256[:12]})"
        if self.detector is not None:
            return f"{lex} OR {self.detector.summary()}"
        if self.detector_name:
            return (f"{lex} alone: detector {self.detector_name} is not trained "
                    "(`make crisis-detector` trains it from RAW_DIR)")
        return f"{lex} alone"

    def decide(self, labels: dict[str, Any] | None, text: str) -> NetDecision:
        """``labels``: the model's valid label object, or None for an invalid answer."""
        hits = self.lexicon.scan(text)
        crisis = [h for h in hits if h.status == "crisis"]
        hit = min(crisis, key=lambda h: self.lexicon.severity.index(h.cls)) if crisis else None
        det = None
        if self.detector is not None:
            det = self.detector.assess(self.lexicon.detector_text(text), veto=_veto(hits))
        model = None if labels is None else labels.get(self.field)
        found = hit.cls if hit is not None else det.cls if det is not None and det.fired else None
        raise_ = found is not None and (model is None or model == self.none_value)
        return NetDecision(self.field, model, found if raise_ else model, raise_, hit, hits, det)

    def apply(self, labels: dict[str, Any] | None, text: str) -> tuple[dict[str, Any] | None, NetDecision]:
        """(labels with the field raised when the net fires, the decision); an invalid answer stays None."""
        d = self.decide(labels, text)
        if d.raised and labels is not None:
            return {**labels, self.field: d.value}, d
        return labels, d


def _veto(hits: list[Hit]) -> Any:
    """veto(start, end) for the detector: why a chunk is not scored (the lexicon found crisis words in it
    and ruled every one of them out), or ""."""

    def veto(start: int, end: int) -> str:
        inside = [h for h in hits if start <= h.start < end]
        if not inside or any(h.status == "crisis" for h in inside):
            return ""
        return "; ".join(f"'{h.phrase}' {h.status}" for h in inside)

    return veto


def net_text(messages: list[dict[str, str]]) -> str:
    """The text a label task assesses in a conversation: its user turns."""
    return "\n".join(m.get("content", "") for m in messages if m.get("role") == "user")
