"""Outputs: idempotent byte-identical reruns, deterministic seeded splits, dataset_info merging."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dp_helpers import SAMPLES, rows

from psyfactory.data_prep import prepare, tasks


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def test_every_task_nonempty_from_samples(sample_prep):
    out, result = sample_prep
    assert list(result) == list(tasks()) == ["cpsycoun", "emotion", "es", "es_summary", "psydt", "psyqa", "sos1k",
                                                "student"]
    for task in tasks():
        assert rows(out, task, "eval"), task
        if task not in ("es_summary", "sos1k"):  # eval-only benchmarks
            assert rows(out, task, "train"), task
    assert rows(out, "es", "val")  # seed 000's 85/15 split of PsyQA


def test_rerun_is_byte_identical(sample_prep, tmp_path):
    out, _ = sample_prep
    prepare(None, SAMPLES, tmp_path, teacher="lexicon", quiet=True)
    first = _digest(tmp_path)
    prepare(None, SAMPLES, tmp_path, teacher="lexicon", quiet=True)  # same dir: rewrites, cache hits
    assert _digest(tmp_path) == first
    other = _digest(out)  # an independent run in another directory
    assert {k: v for k, v in first.items() if "labels_cache" not in k} == \
           {k: v for k, v in other.items() if "labels_cache" not in k}
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temp files left behind


def test_split_depends_only_on_seed(tmp_path, shared_prep):
    from dp_helpers import SHARED

    out, _ = shared_prep
    a = [r["id"] for r in rows(out, "psyqa", "eval")]
    prepare(["psyqa"], SHARED, tmp_path / "s2", seed=7, quiet=True)
    b = [r["id"] for r in rows(tmp_path / "s2", "psyqa", "eval")]
    assert a and b and a != b


def test_dataset_info_keeps_other_entries_and_order(tmp_path):
    info = {"my_corpus": {"file_name": "mine.json"}, "psyqa_train": {"file_name": "stale.json"}, "zzz": {"file_name": "z"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    prepare(["psyqa", "emotion"], SAMPLES, tmp_path, quiet=True)
    new = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    assert list(new)[:3] == ["my_corpus", "psyqa_train", "zzz"]
    assert new["my_corpus"] == {"file_name": "mine.json"} and new["zzz"] == {"file_name": "z"}
    assert new["psyqa_train"]["file_name"] == "data/psyqa/train.jsonl"
    assert {"psyqa_eval", "emotion_train", "emotion_eval", "emotion_val"} <= set(new)


def test_entries_match_the_committed_registry(sample_prep):
    """Our entries equal the repo's dataset_info.json (written by the spine, kept up to date here)."""
    from psyfactory.core.paths import REPO_ROOT

    out, _ = sample_prep
    ours = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    repo = json.loads((REPO_ROOT / "dataset_info.json").read_text(encoding="utf-8"))
    assert ours == {k: repo[k] for k in ours}


def test_sharegpt_and_alpaca_shapes(sample_prep):
    out, _ = sample_prep
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    for name, entry in info.items():
        recs = [json.loads(x) for x in (out / entry["file_name"]).read_text(encoding="utf-8").splitlines()]
        for r in recs:
            if entry.get("formatting") == "sharegpt":
                body = [m for m in r["messages"] if m["role"] != "system"]
                assert [m["role"] for m in body] == ["user", "assistant"] * (len(body) // 2), name
            elif entry["columns"].get("prompt") == "text":  # pre-rendered text (psydt_*_text): the text is all
                assert r["text"].startswith("<|im_start|>") and r["text"].endswith("<|im_end|>\n") and r["output"] == ""
            else:
                assert all(isinstance(r[k], str) for k in ("instruction", "input", "output", "system")), name
                assert r["output"].strip(), name
