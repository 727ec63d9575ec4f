"""SOS-1K: the five folds (fine-grained + binary, read side by side) -> the eval-only risk task, every
line written or quarantined; the real folds (../shared/datasets, read-only) when present."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from dp_helpers import SHARED, quarantine, rows

from psyfactory.data_prep import DataError, prepare
from psyfactory.data_prep.download import MD5, SOS1K_COMMIT, manifest

GOOD = [("今天终于把药都攒够了", 9, 1), ("考试没考好，好难过", 1, 0), ("每天都很累，但还是得撑下去", 2, 0)]


def write_fold(root: Path, fold: int, fine: list[str], binary: list[str] | None = None, nl: str = "\n") -> None:
    folder = root / "SOS-1K"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"fold{fold}.tsv").write_bytes(("comment\tmyLabel" + nl + "".join(x + nl for x in fine)).encode())
    (folder / f"fold{fold}_twoClass.tsv").write_bytes(
        ("comment\ttwoClass" + nl + "".join(x + nl for x in (binary if binary is not None else fine))).encode())


def good_folds(root: Path) -> None:
    for k in range(1, 6):
        write_fold(root, k, [f"{t}{k}\t{lv}" for t, lv, _ in GOOD], [f"{t}{k}\t{h}" for t, _, h in GOOD])


def test_records_keep_level_fold_and_map_high_risk_to_suicidal(tmp_path):
    raw = tmp_path / "raw"
    good_folds(raw)
    res = prepare(["sos1k"], raw, tmp_path / "ds", quiet=True)
    a = res["sos1k"][0]
    assert (a.read, a.written, dict(a.quarantined)) == (15, 15, {}) and dict(a.samples) == {"eval": 15}
    recs = rows(tmp_path / "ds", "sos1k", "eval")
    first = recs[0]
    assert first["id"] == "sos1k-f1-2" and first["input"] == "今天终于把药都攒够了1"
    assert json.loads(first["output"]) == {"risk_flag": "suicidal"}
    assert first["meta"] == {"fold": 1, "level": 9, "risk": "high"}
    assert Counter(json.loads(r["output"])["risk_flag"] for r in recs) == {"suicidal": 5, "none": 10}
    assert {r["meta"]["fold"] for r in recs} == {1, 2, 3, 4, 5}
    info = json.loads((tmp_path / "ds" / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(info) == {"sos1k_eval"}  # eval only: nothing to train on


def test_bad_lines_mismatched_folds_and_duplicates_are_quarantined(tmp_path):
    raw = tmp_path / "raw"
    good_folds(raw)
    write_fold(raw, 2, ["没有制表符的一行", "\t3", "等级超出范围\t11", "二分类不对\t4", "两份文件不一样\t5", "我想消失\t6",
                        "只在细粒度文件里\t1"],
               ["没有制表符的一行\t0", "\t0", "等级超出范围\t0", "二分类不对\t2", "两份文件不同样\t0", "我想消失\t1"], nl="\r\n")
    write_fold(raw, 3, ["我想消失\t6", "同一句话标签不同\t3"], ["我想消失\t1", "同一句话标签不同\t0", "只在二分类文件里\t0"])
    write_fold(raw, 4, ["同一句话标签不同\t7"], ["同一句话标签不同\t1"])
    res = prepare(["sos1k"], raw, tmp_path / "ds", quiet=True)
    a = res["sos1k"][0]
    q = {(x["file"], x["where"]): x["reason"] for x in quarantine(tmp_path / "ds", "sos1k")}
    assert q == {
        ("SOS-1K/fold2.tsv", "line 2"): "missing_field", ("SOS-1K/fold2.tsv", "line 3"): "empty_field",
        ("SOS-1K/fold2.tsv", "line 4"): "unknown_label", ("SOS-1K/fold2_twoClass.tsv", "line 5"): "unknown_label",
        ("SOS-1K/fold2.tsv", "line 6"): "fold_mismatch", ("SOS-1K/fold2.tsv", "line 8"): "fold_mismatch",
        ("SOS-1K/fold3_twoClass.tsv", "line 4"): "fold_mismatch",
        ("SOS-1K/fold3.tsv", "line 2"): "duplicate",  # the same comment and labels as fold 2 line 7
        ("SOS-1K/fold3.tsv", "line 3"): "conflicting_label", ("SOS-1K/fold4.tsv", "line 2"): "conflicting_label",
    }
    assert a.read == 2 * 3 + 7 + 3 + 1 and a.written == 2 * 3 + 1 and a.read == a.written + sum(a.quarantined.values())
    assert a.notes["crlf_normalised"] >= 1
    kept = [r["input"] for r in rows(tmp_path / "ds", "sos1k", "eval")]
    assert kept.count("我想消失") == 1 and "同一句话标签不同" not in kept


def test_a_wrong_header_or_a_missing_fold_is_one_error(tmp_path):
    raw = tmp_path / "raw"
    good_folds(raw)
    (raw / "SOS-1K" / "fold3.tsv").write_text("text\tlabel\n句子\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"fold3\.tsv: line 1: expected the header 'comment\\tmyLabel'"):
        prepare(["sos1k"], raw, tmp_path / "ds", quiet=True)
    good_folds(raw)
    (raw / "SOS-1K" / "fold5_twoClass.tsv").unlink()
    with pytest.raises(DataError, match=r"fold5_twoClass\.tsv: file not found"):
        prepare(["sos1k"], raw, tmp_path / "ds", quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="make download TASK=sos1k"):
        prepare(["sos1k"], tmp_path / "empty", tmp_path / "ds", quiet=True)


def test_download_fetches_the_folds_only_at_the_pinned_commit():
    items = manifest()["sos1k"]
    assert sorted(it.rel for it in items) == sorted(
        f"SOS-1K/fold{k}{s}.tsv" for k in range(1, 6) for s in ("", "_twoClass"))
    assert all(SOS1K_COMMIT in it.url and len(SOS1K_COMMIT) == 40 and it.rel in MD5 for it in items)
    assert not [it for it in items if "test" in it.url.lower()]  # SOS-1K's own test split is never fetched
    if (SHARED / "SOS-1K").is_dir():  # the copy in ../shared is byte-identical to the pinned upstream files
        assert {it.rel: hashlib.md5((SHARED / it.rel).read_bytes()).hexdigest() for it in items} == \
               {it.rel: MD5[it.rel] for it in items}


def test_the_real_folds(shared_prep):
    if not (SHARED / "SOS-1K").is_dir():
        pytest.skip(f"SOS-1K folds not found at {SHARED / 'SOS-1K'}")
    out, result = shared_prep
    a = result["sos1k"][0]
    assert (a.read, a.written, dict(a.quarantined)) == (999, 999, {})  # upstream's folds are clean
    recs = rows(out, "sos1k", "eval")
    risk = Counter(r["meta"]["risk"] for r in recs)
    assert risk == {"high": 482, "low": 517}
    assert Counter(r["meta"]["fold"] for r in recs) == {1: 200, 2: 200, 3: 200, 4: 200, 5: 199}
    assert all((json.loads(r["output"])["risk_flag"] == "suicidal") == (r["meta"]["risk"] == "high") for r in recs)
    levels = Counter(r["meta"]["level"] for r in recs)
    assert set(levels) == set(range(11)) and levels[0] + levels[1] + levels[2] == 156
    # the files' own disagreements, kept as given and counted
    assert a.notes["high_risk_below_level_6"] == sum(r["meta"]["risk"] == "high" and r["meta"]["level"] < 6 for r in recs)
    assert (a.notes["high_risk_below_level_6"], a.notes["low_risk_at_level_6_or_more"]) == (65, 36)  # docs/data.md
