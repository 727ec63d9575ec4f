"""A learned crisis detector beside the lexicon: character n-grams of a text, TF-IDF, a logistic
regression, and a threshold chosen for recall on out-of-fold scores.

The crisis net (psyfactory.core.safety) is the lexicon OR a detector, raise-only. A detector is named
(:data:`DETECTORS`: its features, hyperparameters and the data it is trained from), trained by
`make crisis-detector` (psyfactory.crisis: the data; :func:`fit` here: the model), and cached under
``$PSY_CACHE_DIR/crisis_detectors/<name>/`` (or ``$PSY_DETECTOR_DIR/<name>/``), keyed by the sha256 of its
training data, its spec and the lexicon; it is never committed (the data it learns from carry no licence to redistribute). Without a
cached model a net that names a detector is the lexicon alone, and says so.

Scikit-learn fits the model; scoring is plain Python on the saved weights (a JSON file: each n-gram's
idf and coefficient), so a saved detector scores the same on any installation:

    det = load_detector("sos1k-charngram")         # None when not trained
    det.assess("活着好累，我真的撑不下去了")          # DetectorResult(fired, score, threshold, features, ...)

A text is cut into chunks (its lines, a long line at sentence ends, <= ``max_chars``), each scored on
its own; the text's score is its highest chunk's. A chunk with fewer than ``min_cjk`` Chinese
characters, or with no n-gram the model knows, is not scored (the detector abstains: it was trained
on Chinese text). A chunk that is a training text exactly gets its out-of-fold score (the score of
the model that did not see it), so that evaluating on the training data is still a held-out figure.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from psyfactory.core import paths
from psyfactory.core.errors import ConfigError
from psyfactory.core.files import atomic_write_json

FORMAT = 1  # of the saved file; part of the cache key
_WS = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORDISH = re.compile(r"[\w\u3400-\u9fff]")
# a speaker tag opening a line (来访者：, Client:): not part of what the person wrote
_SPEAKER = re.compile(r"^\s*[^\s:：，。！？,.!?]{1,6}\s*[:：]\s*")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;…])")


@dataclass(frozen=True)
class DetectorSpec:
    """A named detector: what it raises, what it is trained from, its features and model."""

    name: str
    description: str
    sources: tuple[str, ...]  # raw sources (psyfactory.data_prep.download names) its training data come from
    cls: str = "suicidal"  # the class it raises
    ngram: tuple[int, int] = (1, 3)  # character n-gram lengths
    min_df: int = 2  # an n-gram in fewer training texts is dropped
    C: float = 3.0  # inverse L2 regularisation of the logistic regression
    extra_weight: float = 8.0  # total weight of the extra negatives, in units of the number of positives
    target_recall: float = 0.95  # of the net (lexicon OR detector) on the positives' out-of-fold scores
    max_chars: int = 512  # a chunk is at most this long
    min_cjk: int = 2  # a chunk with fewer Chinese characters is not scored

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


DETECTORS: dict[str, DetectorSpec] = {
    "sos1k-charngram": DetectorSpec(
        name="sos1k-charngram",
        description="character 1-3-grams, TF-IDF, logistic regression; positives: SOS-1K high-risk comments; "
                    "negatives: SOS-1K low-risk comments and CPsyCounD client turns (and their sentences) of "
                    "dialogues without crisis language",
        sources=("sos1k", "cpsycoun"),
    ),
}
DEFAULT_DETECTOR = "sos1k-charngram"


def spec_of(name: str) -> DetectorSpec:
    if name not in DETECTORS:
        raise ConfigError(f"unknown crisis detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name]


# ------------------------------------------------------------------------------ text


BLANK = "\x00"  # marks what the detector must not read (the lexicon's figures of speech...): dropped by normalize


def normalize(text: str) -> str:
    """A chunk as the model sees it: blanked characters dropped, a leading speaker tag dropped,
    whitespace collapsed."""
    return _WS.sub(" ", _SPEAKER.sub("", text.replace(BLANK, ""), count=1)).strip()


def spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """(start, end) of the chunks of `text`: its non-empty lines, a line longer than `max_chars` cut at
    sentence ends (a sentence longer than that is cut hard)."""
    out: list[tuple[int, int]] = []
    pos = 0
    for line in text.split("\n"):
        start, end = pos, pos + len(line)
        pos = end + 1
        if not line.strip():
            continue
        if end - start <= max_chars:
            out.append((start, end))
            continue
        cur = start
        piece_start = start
        for part in _SENTENCE_END.split(line):
            if not part:
                continue
            if cur + len(part) - piece_start > max_chars and cur > piece_start:
                out.append((piece_start, cur))
                piece_start = cur
            cur += len(part)
            while cur - piece_start > max_chars:
                out.append((piece_start, piece_start + max_chars))
                piece_start += max_chars
        if cur > piece_start:
            out.append((piece_start, cur))
    return out


def ngrams(text: str, lo: int, hi: int) -> list[str]:
    """Character n-grams of a normalized chunk, lower-cased (the analyzer of training and scoring)."""
    text = text.lower()
    return [text[i:i + n] for n in range(lo, hi + 1) for i in range(len(text) - n + 1)]


def in_scope(chunk: str, min_cjk: int) -> bool:
    """Chinese text: at least `min_cjk` Chinese characters, and they are at least 30% of its letters."""
    cjk = len(_CJK.findall(chunk))
    return cjk >= min_cjk and cjk >= 0.3 * len(_WORDISH.findall(chunk))


def text_key(chunk: str) -> str:
    return hashlib.sha256(normalize(chunk).encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class DetectorResult:
    """What the detector said about one text."""

    name: str
    cls: str
    fired: bool  # score >= threshold (and not vetoed)
    score: float | None  # the highest chunk's score; None: no chunk was scored
    threshold: float
    features: tuple[str, ...] = ()  # the n-grams that raised the best chunk's score most
    chunk: str = ""  # the best chunk (an excerpt)
    out_of_fold: bool = False  # the best chunk is a training text: its out-of-fold score was used
    vetoed: tuple[str, ...] = ()  # chunks not scored because the lexicon ruled their crisis words out

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "fired": self.fired,
                               "score": None if self.score is None else round(self.score, 4),
                               "threshold": round(self.threshold, 4)}
        if self.score is None:
            out["scored"] = False  # nothing in scope: no Chinese text, or no n-gram the model knows
        if self.features:
            out["features"] = list(self.features)
            out["chunk"] = self.chunk
        if self.out_of_fold:
            out["out_of_fold"] = True
        if self.vetoed:
            out["vetoed"] = list(self.vetoed)
        return out

    def describe(self) -> str:
        feats = ", ".join(f"'{f}'" for f in self.features[:3])
        return (f"detector {self.name} (score {self.score:.2f} >= {self.threshold:.2f}"
                + (f"; n-grams {feats}" if feats else "") + (", out-of-fold" if self.out_of_fold else "") + ")")


@dataclass
class Detector:
    """A trained detector (use :func:`load_detector` or :func:`fit`)."""

    spec: DetectorSpec
    threshold: float
    intercept: float
    weights: dict[str, tuple[float, float]]  # n-gram -> (idf, coefficient)
    oof: dict[str, float] = field(default_factory=dict)  # text_key of a training chunk -> its out-of-fold score
    info: dict[str, Any] = field(default_factory=dict)  # training data, counts, cross-validated figures
    path: Path | None = None
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    def raw_score(self, chunk: str) -> tuple[float | None, list[tuple[str, float]]]:
        """(score, [(n-gram, contribution)] best first) of one chunk; None when it is out of scope."""
        chunk = normalize(chunk)
        if not in_scope(chunk, self.spec.min_cjk):
            return None, []
        counts = Counter(g for g in ngrams(chunk, *self.spec.ngram) if g in self.weights)
        if not counts:
            return None, []
        tfidf = {g: (1.0 + math.log(c)) * self.weights[g][0] for g, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in tfidf.values()))
        contrib = {g: self.weights[g][1] * v / norm for g, v in tfidf.items()}
        return self.intercept + sum(contrib.values()), sorted(contrib.items(), key=lambda kv: -kv[1])

    def score(self, chunk: str) -> tuple[float | None, bool]:
        """(score, out_of_fold) of one chunk: a training text gets its out-of-fold score."""
        oof = self.oof.get(text_key(chunk))
        if oof is not None and in_scope(normalize(chunk), self.spec.min_cjk):
            return oof, True
        return self.raw_score(chunk)[0], False

    def assess(self, text: str, veto: Callable[[int, int], str] | None = None) -> DetectorResult:
        """Score every chunk of `text` (``veto(start, end)`` returns why a chunk is not scored, or "")."""
        best: tuple[float, bool, str] | None = None
        vetoed: list[str] = []
        for start, end in spans(text, self.spec.max_chars):
            why = veto(start, end) if veto is not None else ""
            if why:
                vetoed.append(why)
                continue
            chunk = text[start:end]
            s, oof = self.score(chunk)
            if s is not None and (best is None or s > best[0]):
                best = (s, oof, chunk)
        if best is None:
            return DetectorResult(self.name, self.spec.cls, False, None, self.threshold, vetoed=tuple(vetoed))
        s, oof, chunk = best
        fired = s >= self.threshold
        features: tuple[str, ...] = ()
        if fired:
            features = tuple(_distinct([g for g, c in self.raw_score(chunk)[1] if c > 0], 3))
        excerpt = normalize(chunk)
        return DetectorResult(self.name, self.spec.cls, fired, s, self.threshold, features,
                              excerpt if len(excerpt) <= 60 else excerpt[:59] + "…", oof, tuple(vetoed))

    def summary(self) -> str:
        cv = self.info.get("cv", {})
        rec = cv.get("net_recall")
        return (f"detector {self.name} (threshold {self.threshold:.3f}"
                + (f", out-of-fold recall of the net {rec:.3f}" if rec is not None else "") + ")")


def _distinct(grams: list[str], k: int) -> list[str]:
    """The first `k` n-grams, skipping one contained in (or containing) one already taken."""
    out: list[str] = []
    for g in grams:
        if any(g in o or o in g for o in out):
            continue
        out.append(g)
        if len(out) == k:
            break
    return out


# ------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class Unit:
    """One training text: its chunk text (normalized), label, fold (cross-validation group), whether it
    is an extra negative (outside the main data set), and what the lexicon did on it (for the net's
    recall when the threshold is chosen): raised it, or ruled its crisis words out (veto)."""

    text: str
    positive: bool
    fold: int
    extra: bool = False
    lexicon: bool = False
    veto: bool = False


def _vectorizer(spec: DetectorSpec) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    lo, hi = spec.ngram
    return TfidfVectorizer(analyzer=lambda d: ngrams(d, lo, hi), min_df=spec.min_df, sublinear_tf=True)


def _weights(units: Sequence[Unit], spec: DetectorSpec) -> list[float]:
    """Positives 1; main negatives balanced to the positives; extra negatives `extra_weight` x the
    positives' count in total."""
    pos = sum(u.positive for u in units)
    main_neg = sum(not u.positive and not u.extra for u in units)
    extra = sum(u.extra for u in units)
    return [1.0 if u.positive else (spec.extra_weight * pos / extra if u.extra else pos / max(main_neg, 1))
            for u in units]


def train_model(units: Sequence[Unit], spec: DetectorSpec) -> tuple[Any, Any]:
    """(vectorizer, logistic regression) fitted on `units`."""
    from sklearn.linear_model import LogisticRegression

    vec = _vectorizer(spec)
    x = vec.fit_transform([u.text for u in units])
    model = LogisticRegression(C=spec.C, max_iter=5000)
    model.fit(x, [int(u.positive) for u in units], sample_weight=_weights(units, spec))
    return vec, model


def decision(vec: Any, model: Any, texts: Sequence[str]) -> list[float]:
    return [float(s) for s in model.decision_function(vec.transform(list(texts)))] if texts else []


def out_of_fold(units: Sequence[Unit], spec: DetectorSpec) -> list[float]:
    """Each unit's score by the model trained on the other folds."""
    scores = [0.0] * len(units)
    for fold in sorted({u.fold for u in units}):
        train = [u for u in units if u.fold != fold]
        held = [i for i, u in enumerate(units) if u.fold == fold]
        vec, model = train_model(train, spec)
        for i, s in zip(held, decision(vec, model, [units[i].text for i in held]), strict=True):
            scores[i] = s
    return scores


def net_fires(u: Unit, score: float, threshold: float, spec: DetectorSpec) -> bool:
    """The net on a training unit: the lexicon, or the detector on a chunk the lexicon did not rule out."""
    return u.lexicon or (not u.veto and in_scope(u.text, spec.min_cjk) and score >= threshold)


def choose_threshold(units: Sequence[Unit], scores: Sequence[float], spec: DetectorSpec) -> float:
    """The highest threshold at which the net (lexicon OR detector) finds `target_recall` of the main
    positives on these (out-of-fold) scores."""
    pos = [(u, s) for u, s in zip(units, scores, strict=True) if u.positive and not u.extra]
    if not pos:
        raise ConfigError(f"crisis detector {spec.name}: no positive training texts")
    need = math.ceil(spec.target_recall * len(pos) - 1e-9)
    free = sum(u.lexicon for u, _ in pos)
    candidates = sorted((s for u, s in pos if not u.lexicon and not u.veto and in_scope(u.text, spec.min_cjk)),
                        reverse=True)
    if free >= need:  # the lexicon alone reaches the target: the detector adds only above every positive
        return (candidates[0] if candidates else 0.0) + 1e-6
    if free + len(candidates) < need:
        raise ConfigError(f"crisis detector {spec.name}: recall {spec.target_recall} cannot be reached "
                          f"({free} positives by the lexicon, {len(candidates)} the detector can score, of {len(pos)})")
    return candidates[need - free - 1]


def fit(units: Sequence[Unit], spec: DetectorSpec, info: dict[str, Any] | None = None) -> Detector:
    """Cross-validate by the units' folds (out-of-fold scores), choose the threshold on them, fit the
    final model on everything; the saved detector carries each unit's out-of-fold score."""
    t0 = time.time()
    scores = out_of_fold(units, spec)
    threshold = choose_threshold(units, scores, spec)
    vec, model = train_model(units, spec)
    vocab = vec.vocabulary_
    idf, coef = vec.idf_, model.coef_[0]
    weights = {g: (float(idf[j]), float(coef[j])) for g, j in vocab.items()}
    main_pos = [(u, s) for u, s in zip(units, scores, strict=True) if u.positive and not u.extra]
    main_neg = [(u, s) for u, s in zip(units, scores, strict=True) if not u.positive and not u.extra]
    extra = [(u, s) for u, s in zip(units, scores, strict=True) if u.extra]

    def rate(rows: list[tuple[Unit, float]], net: bool) -> float | None:
        if not rows:
            return None
        hits = sum(net_fires(u, s, threshold, spec) if net else net_fires(replace(u, lexicon=False), s, threshold, spec)
                   for u, s in rows)
        return hits / len(rows)

    import sklearn

    det = Detector(spec, threshold, float(model.intercept_[0]), weights,
                   {text_key(u.text): round(s, 6) for u, s in zip(units, scores, strict=True)},
                   {**(info or {}), "format": FORMAT, "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "seconds": round(time.time() - t0, 1), "sklearn": sklearn.__version__,
                    "units": {"positives": len(main_pos), "negatives": len(main_neg), "extra_negatives": len(extra)},
                    "features": len(weights),
                    "cv": {"folds": len({u.fold for u in units}), "net_recall": rate(main_pos, True),
                           "detector_recall": rate(main_pos, False), "net_raise_rate_negatives": rate(main_neg, True),
                           "detector_raise_rate_negatives": rate(main_neg, False),
                           "detector_raise_rate_extra": rate(extra, False)}})
    return det


# ------------------------------------------------------------------------------ cache


def cache_root() -> Path:
    return paths.detector_dir()


def model_file(name: str, key: str) -> Path:
    return cache_root() / name / f"{key}.json"


def cache_key(spec: DetectorSpec, data_sha256: str, lexicon_sha256: str) -> str:
    return hashlib.sha256(f"{FORMAT}:{spec.fingerprint()}:{data_sha256}:{lexicon_sha256}".encode()).hexdigest()[:16]


def save(det: Detector, key: str) -> Path:
    """Write the model file atomically and make it the one `load_detector(name)` returns."""
    path = model_file(det.name, key)
    atomic_write_json(path, {"format": FORMAT, "spec": asdict(det.spec), "threshold": det.threshold,
                             "intercept": det.intercept, "info": det.info,
                             "weights": {g: [round(i, 6), round(c, 6)] for g, (i, c) in det.weights.items()},
                             "oof": det.oof}, indent=None)
    use(det.name, key)
    return path


def use(name: str, key: str) -> None:
    atomic_write_json(cache_root() / name / "current.json", {"key": key, "file": f"{key}.json"})


def current_file(name: str) -> Path | None:
    """The cached model file of detector `name` that nets use, or None when none is trained."""
    pointer = cache_root() / name / "current.json"
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
        path = pointer.parent / str(data["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_file() else None


def load_detector(name: str) -> Detector | None:
    """The trained detector `name` from the cache, or None when there is none (`make crisis-detector`)."""
    spec_of(name)
    path = current_file(name)
    if path is None:
        return None
    return _load(str(path), path.stat().st_mtime_ns)


@cache
def _load(path: str, _mtime: int) -> Detector:
    raw = Path(path).read_bytes()
    try:
        data = json.loads(raw)
        spec = data["spec"]
        spec = DetectorSpec(**{**spec, "sources": tuple(spec["sources"]), "ngram": tuple(spec["ngram"])})
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')} (this version reads {FORMAT})")
        return Detector(spec, float(data["threshold"]), float(data["intercept"]),
                        {g: (float(v[0]), float(v[1])) for g, v in data["weights"].items()},
                        {k: float(v) for k, v in data.get("oof", {}).items()}, data.get("info", {}), Path(path),
                        hashlib.sha256(raw).hexdigest())
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a crisis detector this version can read ({e}); retrain it with "
                          "`make crisis-detector`") from None
