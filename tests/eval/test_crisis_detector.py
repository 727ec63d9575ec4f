"""The learned crisis detector (psyfactory.core.detector, psyfactory.crisis) and the net it makes with the
lexicon (psyfactory.core.safety): training from a raw folder, the cache keyed by the data, scoring in
plain Python equal to scikit-learn's, the threshold rule, the lexicon's rulings standing, raise-only.

Fast tests train on the invented samples (data_prep/samples: SOS-1K-shaped comments + CPsyCounD cases);
the real folds (../shared/datasets) are used by the slow test at the end when present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from psyfactory import crisis
from psyfactory.core import detector as detmod
from psyfactory.core.detector import DetectorSpec, Unit, choose_threshold, spans
from psyfactory.core.errors import ConfigError
from psyfactory.core.paths import REPO_ROOT
from psyfactory.core.safety import SafetyNet, load_lexicon

SAMPLES = REPO_ROOT / "data_prep" / "samples"
SHARED = REPO_ROOT.parent / "shared" / "datasets"
NAME = detmod.DEFAULT_DETECTOR


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PSY_DETECTOR_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def trained(cache: Path) -> detmod.Detector:
    det, fresh = crisis.train_detector(SAMPLES, quiet=True)
    assert fresh
    return det


def test_no_trained_detector_means_the_lexicon_alone_and_says_so(cache):
    assert detmod.load_detector(NAME) is None
    net = crisis.default_net()
    assert net.detector is None and "alone: detector sos1k-charngram is not trained" in net.describe()
    d = net.decide(None, "活着好累，我真的撑不下去了")  # no lexicon phrase: nothing raises it
    assert d.found is None and d.detector is None and d.fired == []
    with pytest.raises(ConfigError, match="unknown crisis detector 'nope'"):
        detmod.load_detector("nope")


def test_training_caches_by_data_and_retrains_when_the_data_change(cache, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(SAMPLES, raw)
    det, fresh = crisis.train_detector(raw, quiet=True)
    first = detmod.current_file(NAME)
    assert fresh and first is not None and first.parent == cache / NAME
    saved = json.loads(first.read_text(encoding="utf-8"))
    assert saved["info"]["data_sha256"] == det.info["data_sha256"] and saved["spec"]["name"] == NAME
    assert saved["info"]["units"]["positives"] == 7 and saved["info"]["units"]["negatives"] == 9
    again, fresh = crisis.train_detector(raw, quiet=True)
    assert not fresh and detmod.current_file(NAME) == first  # same data: the cached model
    for name in ("fold4.tsv", "fold4_twoClass.tsv"):  # a new comment in a fold: new data, new model
        p = raw / "SOS-1K" / name
        p.write_text(p.read_text(encoding="utf-8") + f"我今晚就去跳河\t{9 if name == 'fold4.tsv' else 1}\n",
                     encoding="utf-8")
    changed, fresh = crisis.train_detector(raw, quiet=True)
    assert fresh and detmod.current_file(NAME) != first and first.is_file()
    assert changed.info["data_sha256"] != det.info["data_sha256"] and changed.info["units"]["positives"] == 8
    forced, fresh = crisis.train_detector(raw, quiet=True, force=True)
    assert fresh


def test_make_crisis_detector_trains_once_then_says_up_to_date(cache):
    import os
    import subprocess

    env = {**os.environ, "PSY_DETECTOR_DIR": str(cache), "OMP_NUM_THREADS": "1"}

    def make() -> subprocess.CompletedProcess:
        return subprocess.run(["make", "--no-print-directory", "crisis-detector", f"RAW_DIR={SAMPLES}"], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    first = make()
    assert first.returncode == 0, first.stderr
    assert "7 high-risk and 9 low-risk SOS-1K comments" in first.stdout and "threshold" in first.stdout
    path = detmod.current_file(NAME)
    assert path is not None and path.parent == cache / NAME and str(path) in first.stdout
    second = make()
    assert second.returncode == 0 and "up to date" in second.stdout and detmod.current_file(NAME) == path


def test_training_needs_both_sources(cache, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(SAMPLES / "SOS-1K", raw / "SOS-1K")
    with pytest.raises(crisis.DetectorError, match="missing: cpsycoun .*make download TASK=sos1k,cpsycoun"):
        crisis.train_detector(raw, quiet=True)


def test_plain_python_scores_equal_scikit_learn(trained):
    data = crisis.training_data(SAMPLES)
    vec, model = detmod.train_model(data.units, trained.spec)
    texts = [u.text for u in data.units] + ["我想从这个世界上消失", "今天好累，不想说话", "工作压力好大，晚上一直哭"]
    ours = [trained.raw_score(t)[0] for t in texts]
    theirs = detmod.decision(vec, model, texts)
    checked = [(a, b) for a, b in zip(ours, theirs, strict=True) if a is not None]
    assert len(checked) >= len(texts) - 2
    assert max(abs(a - b) for a, b in checked) < 1e-3  # weights are saved to 6 decimals


def test_a_training_text_gets_its_out_of_fold_score(trained):
    comments, _ = crisis.sos1k_comments(SAMPLES)
    text = comments[0].text
    score, oof = trained.score(text)
    assert oof and score == trained.oof[detmod.text_key(text)]
    assert score != pytest.approx(trained.raw_score(text)[0], abs=1e-9)  # not the model that saw it
    assert trained.score("一句从没出现在训练里的话，今天下雨了")[1] is False


def test_threshold_reaches_the_target_recall_of_the_net():
    spec = DetectorSpec("t", "", (), target_recall=0.6, min_cjk=1)
    units = [Unit("想死", True, 1, lexicon=True), Unit("好累", True, 1), Unit("撑不住", True, 2), Unit("没意思", True, 2),
             Unit("开心", False, 1), Unit("我从没想过自杀", True, 2, veto=True)]
    scores = [5.0, 0.4, 0.9, -1.0, 0.5, 3.0]
    t = choose_threshold(units, scores, spec)
    assert t == 0.4  # 5 positives: 3 needed; the lexicon gives 1, the vetoed one never counts
    assert sum(detmod.net_fires(u, s, t, spec) for u, s in zip(units, scores, strict=True) if u.positive) == 3
    assert choose_threshold(units, scores, DetectorSpec("t", "", (), target_recall=0.8, min_cjk=1)) == -1.0
    # the lexicon alone reaches 0.2: the detector is set above every positive it could score
    assert 0.9 < choose_threshold(units, scores, DetectorSpec("t", "", (), target_recall=0.2, min_cjk=1)) < 1.0
    with pytest.raises(ConfigError, match="cannot be reached"):
        choose_threshold(units, scores, DetectorSpec("t", "", (), target_recall=1.0, min_cjk=1))


def test_chunks_are_lines_and_long_lines_are_cut_at_sentence_ends():
    text = "来访者：第一句。\n\n" + "很长的一句话。" * 100 + "\nlast"
    cut = spans(text, 50)
    assert cut[0] == (0, 8) and all(e - s <= 50 for s, e in cut)
    pieces = [text[s:e] for s, e in cut[1:-1]]
    assert all(p.endswith("。") for p in pieces) and "".join(pieces) == "很长的一句话。" * 100
    assert text[slice(*cut[-1])] == "last"
    assert detmod.normalize("来访者：  我  好累") == "我 好累"


def test_the_net_is_lexicon_or_detector_raise_only_and_the_lexicon_rules_stand(trained):
    net = SafetyNet(load_lexicon(), "risk_flag", detector=trained, detector_name=NAME)
    assert "OR detector sos1k-charngram" in net.describe()
    english = net.decide(None, "I am so tired of everything")
    assert english.detector is not None and english.detector.score is None and not english.detector.fired
    negated = net.decide(None, "我从没想过自杀。")  # the lexicon ruled its only crisis word out: not scored
    assert negated.found is None and negated.detector.vetoed == ("'自杀' negated",) and negated.detector.score is None
    # a text the detector scores high: find one among the samples' high-risk comments it fires on
    comments, _ = crisis.sos1k_comments(SAMPLES)
    fired = [c.text for c in comments if (d := net.decide(None, c.text)).detector.fired and d.hit is None]
    assert fired, "the detector raises none of the samples' comments on its own"
    d = net.decide({"risk_flag": "none"}, fired[0])
    assert d.raised and d.value == "suicidal" and d.fired == ["detector"] and d.hit is None
    rec = d.record()
    assert rec["fired"] == ["detector"] and rec["detector"]["fired"] and rec["detector"]["features"]
    assert rec["detector"]["score"] >= rec["detector"]["threshold"]
    assert "by the crisis safety net: detector sos1k-charngram (score" in d.note()
    kept = net.decide({"risk_flag": "violence"}, fired[0])  # never changes a class the model gave
    assert not kept.raised and kept.value == "violence" and kept.found == "suicidal"
    both = net.decide(None, "我不想活了")
    assert "lexicon" in both.fired and both.found == "suicidal"


def test_the_schema_must_allow_what_the_detector_raises(trained):
    net = SafetyNet(load_lexicon(), "risk_flag", detector=trained, detector_name=NAME)
    with pytest.raises(ConfigError, match="raises risk_flag to 'self_harm', 'violence'"):
        net.check(["none", "suicidal"], "schema.json")


def test_an_unreadable_cached_model_is_one_error(cache):
    detmod.use(NAME, "broken")
    path = cache / NAME / "broken.json"
    path.write_text('{"format": 1, "spec": {}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a crisis detector this version can read.*make crisis-detector"):
        detmod.load_detector(NAME)


@pytest.mark.slow
def test_on_the_real_folds_the_net_reaches_the_recall_target(cache):
    if not (SHARED / "SOS-1K").is_dir() or not (SHARED / "CPsyCoun").is_dir():
        pytest.skip(f"SOS-1K / CPsyCoun not found under {SHARED}")
    det, _ = crisis.train_detector(SHARED, quiet=True)
    cv = det.info["cv"]
    assert det.info["units"] == {"positives": 482, "negatives": 517, "extra_negatives": 25044}
    assert cv["net_recall"] >= 0.95  # out of fold, the threshold chosen on these scores
    assert cv["detector_raise_rate_extra"] < 0.01  # CPsyCounD turns without crisis language
    net = SafetyNet(load_lexicon(), "risk_flag", detector=det, detector_name=NAME)
    comments, _ = crisis.sos1k_comments(SHARED)
    found = [net.decide(None, c.text) for c in comments if c.high]
    assert all(d.detector.out_of_fold for d in found if d.detector.score is not None)
    assert sum(d.found is not None for d in found) / len(found) == pytest.approx(cv["net_recall"], abs=1e-9)
