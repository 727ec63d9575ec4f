"""`make download` through huggingface_hub / ModelScope and the shared HTTP downloader, against a loopback
fake of the hub's file-resolve API (HF_ENDPOINT pointed at it, as at a mirror): pinned revisions in the
URLs, a dropped connection mid-file resumed with a range request, retries, sha256 checks, and the
download manifest beside the raw data. No network."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
import types

import pytest
from dp_helpers import SAMPLES
from fakehub import FakeHub, serve
from psyutil import cli

from psyfactory.data_prep import download as dl
from psyfactory.data_prep import fetch
from psyfactory.data_prep.download import EMOTION_LABELS, EMOTION_REPO, EMOTION_REVISION, PSYDT_REPO, download


@pytest.fixture
def hub(monkeypatch):
    """A fake hub on loopback, HF_ENDPOINT pointing at it, online, retries without waiting."""
    import huggingface_hub.constants as hc

    httpd, fake = serve(FakeHub())
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("USE_MODELSCOPE_HUB", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)  # read by huggingface_hub when it was imported
    # huggingface_hub streams 10 MB chunks: small ones make our small files behave like big ones (the bytes
    # before a dropped connection reach the disk, and the retry asks for the rest only)
    monkeypatch.setattr(hc, "DOWNLOAD_CHUNK_SIZE", 128)
    monkeypatch.setattr(fetch, "sleep", lambda s: None)
    yield fake
    httpd.shutdown()
    httpd.server_close()


def emotion_parquet(split_file: str) -> tuple[bytes, list[str]]:
    """The bundled sample split as the hub's parquet (text, label id), and its `text;label` lines."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = (SAMPLES / "emotion" / split_file).read_text(encoding="utf-8").splitlines()
    texts, labels = zip(*(ln.rsplit(";", 1) for ln in lines), strict=True)
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": list(texts), "label": [EMOTION_LABELS.index(x) for x in labels]}), buf)
    return buf.getvalue(), lines


def add_emotion(fake: FakeHub) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for raw, hf in (("train", "train"), ("val", "validation"), ("test", "test")):
        data, lines = emotion_parquet(f"{raw}.txt")
        key = fake.add_hub_file(EMOTION_REPO, EMOTION_REVISION, f"split/{hf}-00000-of-00001.parquet", data)
        out[raw] = (key, lines)
    return out


def test_hub_files_through_hf_endpoint_pinned_resumed_and_recorded(hub, tmp_path, capsys):
    files = add_emotion(hub)
    train_key = files["train"][0]
    hub.drop_once.add(train_key)  # the connection drops halfway through the first GET
    raw = tmp_path / "raw"
    assert download(raw, sources=["emotion"], workers=2) == []
    for split, (key, lines) in files.items():
        assert (raw / "emotion" / f"{split}.txt").read_text(encoding="utf-8").splitlines() == lines
        # huggingface_hub asked the mirror at the pinned revision, never at `main`
        assert f"/datasets/{EMOTION_REPO}/resolve/{EMOTION_REVISION}/" in key
        assert ("HEAD", key, None) in hub.requests
    ranges = hub.gets(train_key)
    half = len(hub.files[train_key]) // 2
    # resumed where the connection dropped (the last whole chunk it had written), not from the start
    assert len(ranges) == 2 and ranges[0] is None, ranges
    assert 0 < int(ranges[1].removeprefix("bytes=").rstrip("-")) <= half, ranges
    assert not any("/resolve/main/" in p for _, p, _ in hub.requests)
    record = json.loads((raw / dl.MANIFEST).read_text())
    entry = record["files"]["emotion/train.txt"]
    assert entry["from"] == {"hub": "huggingface", "endpoint": hub.url, "repo": EMOTION_REPO, "repo_type": "dataset",
                             "path": "split/train-00000-of-00001.parquet", "revision": EMOTION_REVISION,
                             "commit": EMOTION_REVISION}
    assert entry["fetched_sha256"] == hashlib.sha256(hub.files[train_key]).hexdigest()
    assert entry["sha256"] == hashlib.sha256((raw / "emotion/train.txt").read_bytes()).hexdigest()
    assert entry["converted"] is True and entry["source"] == "emotion"
    assert record["last_run"]["hf_endpoint"] == hub.url
    assert not (raw / dl.STAGING).exists()  # nothing left half-fetched
    assert "3 fetched" in capsys.readouterr().out
    # a rerun fetches nothing and keeps the records
    n = len(hub.requests)
    assert download(raw, sources=["emotion"]) == [] and len(hub.requests) == n
    assert set(json.loads((raw / dl.MANIFEST).read_text())["files"]) == {f"emotion/{s}.txt" for s in files}


def test_pinned_sha256_refuses_other_bytes(hub, tmp_path):
    """PsyDTCorpus is pinned by the sha256 of its files: a mirror serving anything else is refused."""
    key = hub.add_hub_file(PSYDT_REPO, dl.PSYDT_REVISION, "PsyDTCorpus_train_mulit_turn_packing.json", b"[]",
                           commit="d" * 40)
    hub.add_hub_file(PSYDT_REPO, dl.PSYDT_REVISION, "PsyDTCorpus_test_single_turn_split.json", b"[]")
    raw = tmp_path / "raw"
    failures = download(raw, sources=["psydt"])
    assert len(failures) == 2 and all("sha256 mismatch" in f for f in failures), failures
    assert "517fabb22502b84de72ff1d62c7efea0bd16f41cf0939d2cd1d52d285c396345" in failures[1] + failures[0]
    assert not (raw / "PsyDTCorpus").exists() and not (raw / dl.MANIFEST).exists()
    assert hub.gets(key) == [None]


def _pin_psydt(monkeypatch, contents: dict[str, bytes]) -> None:
    """The real psydt items, pinned to the sha256 of the stand-in contents."""
    real = dl.manifest

    def pinned():
        plan = real()
        plan["psydt"] = [dataclasses.replace(it, sha256=hashlib.sha256(contents[it.hub.path]).hexdigest())
                         for it in plan["psydt"]]
        return plan

    monkeypatch.setattr(dl, "manifest", pinned)


def test_modelscope_for_the_data_it_hosts(hub, tmp_path, monkeypatch):
    """USE_MODELSCOPE_HUB=1: PsyDTCorpus (hosted on ModelScope) through modelscope's dataset_file_download,
    the Emotion parquet (not on ModelScope) still through HF_ENDPOINT."""
    contents = {"PsyDTCorpus_train_mulit_turn_packing.json": b'[{"id": 1}]',
                "PsyDTCorpus_test_single_turn_split.json": b'[{"id": 2}]'}
    _pin_psydt(monkeypatch, contents)
    calls = []

    def dataset_file_download(dataset_id, file_path, revision=None, cache_dir=None, **kw):
        calls.append((dataset_id, file_path, revision))
        out = tmp_path / "mscache" / dataset_id / file_path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(contents[file_path])
        return str(out)

    pkg, hubmod, fd = (types.ModuleType(n) for n in ("modelscope", "modelscope.hub", "modelscope.hub.file_download"))
    fd.dataset_file_download = dataset_file_download
    for name, mod in (("modelscope", pkg), ("modelscope.hub", hubmod), ("modelscope.hub.file_download", fd)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    add_emotion(hub)
    raw = tmp_path / "raw"
    assert download(raw, sources=["psydt", "emotion"]) == []
    assert sorted(calls) == sorted((PSYDT_REPO, n, "master") for n in contents)
    assert (raw / "PsyDTCorpus" / "PsyDTCorpus_test_single_turn_split.json").read_bytes() == b'[{"id": 2}]'
    assert not any("PsyDT" in p for _, p, _ in hub.requests)  # not asked of the HF mirror
    record = json.loads((raw / dl.MANIFEST).read_text())["files"]
    assert record["PsyDTCorpus/PsyDTCorpus_train_mulit_turn_packing.json"]["from"]["hub"] == "modelscope"
    assert record["PsyDTCorpus/PsyDTCorpus_train_mulit_turn_packing.json"]["pinned"] == ["sha256"]
    assert record["emotion/val.txt"]["from"]["endpoint"] == hub.url


def test_modelscope_missing_is_one_line(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    monkeypatch.setitem(sys.modules, "modelscope", None)  # not installed
    failures = download(tmp_path / "raw", sources=["psydt"])
    assert failures and all(f.endswith("USE_MODELSCOPE_HUB=1 needs the modelscope package: pip install modelscope")
                            for f in failures), failures
    assert hub.requests == []


def test_offline_mode_is_named(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    add_emotion(hub)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    failures = download(tmp_path / "raw", sources=["emotion"])
    assert len(failures) == 3 and all("HF_HUB_OFFLINE=1 is set" in f for f in failures), failures
    assert hub.requests == []


def test_missing_hub_file_is_not_retried(hub, tmp_path):
    failures = download(tmp_path / "raw", sources=["emotion"])
    assert len(failures) == 3 and all(f.endswith("HTTP 404") for f in failures), failures
    assert len(hub.requests) == 3  # one HEAD each, no retries


def test_github_files_plain_http_retried_resumed_checked(hub, tmp_path, monkeypatch):
    """PsyQA's example (GitHub, pinned commit, pinned sha256) and LongEmotion over the shared HTTP downloader:
    503s are retried, a dropped connection resumes with a range, a wrong file is refused by its sha256."""
    psyqa = (SAMPLES / "PsyQA" / "PsyQA_example.json").read_bytes()  # the bundled (invented) sample
    long = (SAMPLES / "LongEmotion" / "Emotion_Summary_origin.jsonl").read_bytes()
    monkeypatch.setattr(dl, "PSYQA", f"{hub.url}/thu-coai/PsyQA/e224c7e")
    monkeypatch.setattr(dl, "LONGEMOTION", f"{hub.url}/LongEmotion/7149110/data")
    monkeypatch.setitem(dl.MD5, "LongEmotion/Emotion_Summary_origin.jsonl", hashlib.md5(long).hexdigest())
    qa = hub.add_file("/thu-coai/PsyQA/e224c7e/PsyQA_example.json", psyqa)
    le = hub.add_file("/LongEmotion/7149110/data/Emotion_Summary_origin.jsonl", long)
    hub.fail[le] = 2
    hub.drop_once.add(le)
    raw = tmp_path / "raw"
    failures = download(raw, sources=["psyqa", "longemotion"])
    # the sample is not the upstream file: its sha256 differs from the pinned one, nothing is written
    assert failures == [f"PsyQA/PsyQA_example.json: sha256 mismatch (got {hashlib.sha256(psyqa).hexdigest()}, "
                        "want af0e8322727f4ea1a6dd5aac9c116ea56c488a704e3065e1382138e89d8a6946)"]
    assert not (raw / "PsyQA").exists()
    assert (raw / "LongEmotion/Emotion_Summary_origin.jsonl").read_bytes() == long
    assert hub.gets(le) == [None, None, None, f"bytes={len(long) // 2}-"]  # 503, 503, dropped, resumed
    entry = json.loads((raw / dl.MANIFEST).read_text())["files"]["LongEmotion/Emotion_Summary_origin.jsonl"]
    assert entry["pinned"] == ["md5"] and entry["attempts"] == 4 and entry["resumed_at"] == [len(long) // 2]
    assert entry["from"] == {"url": f"{hub.url}/LongEmotion/7149110/data/Emotion_Summary_origin.jsonl"}
    assert entry["sha256"] == hashlib.sha256(long).hexdigest()
    assert "PsyQA/PsyQA_example.json: sha256 mismatch" in (raw / "download_failures.txt").read_text()
    assert hub.gets(qa) == [None]


def test_http_resume_survives_a_killed_run_and_a_server_that_ignores_ranges(hub, tmp_path):
    data = bytes(range(256)) * 400
    key = hub.add_file("/gh/file.bin", data)
    dest = tmp_path / "stage" / "file.bin"
    dest.parent.mkdir()
    dest.with_name("file.bin.part").write_bytes(data[:1000])  # left by an interrupted run of the same URL
    dest.with_name("file.bin.part.url").write_text(f"{hub.url}{key}")
    got = fetch.http_file(f"{hub.url}{key}", dest)
    assert dest.read_bytes() == data and got.resumed_at == [1000] and hub.gets(key) == ["bytes=1000-"]
    assert got.sha256 == hashlib.sha256(data).hexdigest() and not dest.with_name("file.bin.part").exists()
    assert not dest.with_name("file.bin.part.url").exists()
    # a part left by another URL is not resumed
    dest.unlink()
    dest.with_name("file.bin.part").write_bytes(b"other file")
    dest.with_name("file.bin.part.url").write_text(f"{hub.url}/elsewhere.bin")
    assert fetch.http_file(f"{hub.url}{key}", dest).resumed_at == [] and dest.read_bytes() == data
    assert hub.gets(key)[-1] is None
    # a server answering 200 to a range request: the part restarts, the file is still right
    hub.ignore_range.add(key)
    dest.unlink()
    dest.with_name("file.bin.part").write_bytes(b"garbage")
    dest.with_name("file.bin.part.url").write_text(f"{hub.url}{key}")
    assert fetch.http_file(f"{hub.url}{key}", dest).resumed_at == [] and dest.read_bytes() == data
    assert hub.gets(key)[-1] == "bytes=7-"
    # retries are bounded: a file that keeps failing gives up with the reason, keeping the part to resume
    hub.fail[key] = 10
    with pytest.raises(fetch.FetchError, match=r"HTTP 503 \(gave up after 3 attempt"):
        fetch.http_file(f"{hub.url}{key}", tmp_path / "stage" / "other.bin", retries=2)


def test_make_download_task_with_a_mirror_endpoint(hub, tmp_path):
    """The command line: `make download TASK=emotion` with HF_ENDPOINT set goes to the mirror."""
    add_emotion(hub)
    raw = tmp_path / "raw"
    res = cli("download", "--raw-dir", str(raw), "--task", "emotion")
    assert f"from {hub.url} for hub files" in res.stdout and "3 fetched" in res.stdout
    assert (raw / "emotion" / "test.txt").is_file()
