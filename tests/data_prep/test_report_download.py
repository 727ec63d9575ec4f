"""`data-report` with the tiny model's tokenizer; `download` against a loopback HTTP mirror."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dp_helpers import SHARED, need_shared, rows
from psyutil import cli

from psyfactory.commands.data import task_info
from psyfactory.data_prep import prepare
from psyfactory.data_prep.download import CPSYCOUN_COMMIT, download
from psyfactory.data_prep.report import data_report

INFO = task_info("tiny", None)


def report(tasks, out, **kw):
    return data_report(tasks, out, INFO, **kw)


def test_data_report_counts_histograms_truncation(sample_prep, capsys):
    out, _ = sample_prep
    rep = report(["emotion", "student", "psydt"], out)
    for task in ("emotion", "student", "psydt"):
        info = rep[task]
        for split in ("train", "eval"):
            assert info["splits"][split]["n"] == len(rows(out, task, split))
        png = out / info["histogram"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # cutoff_len comes from the composed task config (configs/tasks/*.yaml)
    assert rep["student"]["cutoff_len"] == 2560
    assert rep["emotion"]["splits"]["train"]["labels"]["label"]["joy"] == sum(
        r["output"] == "joy" for r in rows(out, "emotion", "train"))
    assert set(rep["student"]["splits"]["train"]["labels"]) == {
        "depression_level", "anxiety_level", "risk_flag", "student_distress_score"}
    # the class distribution of each split (the split is stratified on risk_flag), as in the files
    classes = rep["student"]["classes"]
    assert classes["field"] == "risk_flag" and classes["oversample_risk"] == 1
    for split in ("train", "eval"):
        flags = [json.loads(r["output"])["risk_flag"] for r in rows(out, "student", split)]
        assert classes["splits"][split] == {c: flags.count(c) for c in ("none", "suicidal", "self_harm", "violence")}
    # truncation share moves with the cutoff as it must
    lo = report(["psydt"], out, cutoff_len=8)["psydt"]["splits"]["train"]["truncated_share"]
    hi = report(["psydt"], out, cutoff_len=10**6)["psydt"]["splits"]["train"]["truncated_share"]
    mid_cut = rep["psydt"]["splits"]["train"]["tokens_p50"]
    mid = report(["psydt"], out, cutoff_len=mid_cut)["psydt"]["splits"]["train"]["truncated_share"]
    assert (lo, hi) == (1.0, 0.0) and 0.0 < mid < 1.0
    printed = capsys.readouterr().out
    assert "| psydt | train |" in printed and "Class distribution of student (split stratified on `risk_flag`)" in printed
    assert "| eval | " in printed
    assert (out / "data" / "data_report.md").exists()


@pytest.fixture()
def server(tmp_path_factory):
    """A mirror laid out like the raw dir: the shared samples, and CPsyCoun as the one archive of the
    repository at its pinned commit (the shape GitHub's codeload serves), built here from the samples."""
    need_shared()
    mirror = tmp_path_factory.mktemp("mirror")
    for child in SHARED.iterdir():
        if child.name != "CPsyCoun":
            (mirror / child.name).symlink_to(child)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(SHARED / "CPsyCoun", arcname=f"CPsyCoun-{CPSYCOUN_COMMIT}")
        evil = tarfile.TarInfo(f"CPsyCoun-{CPSYCOUN_COMMIT}/CPsyCounE/../../escape.json")
        evil.size = 2
        tar.addfile(evil, io.BytesIO(b"{}"))  # a member that would leave the target folder: ignored
    (mirror / "CPsyCoun").mkdir()
    (mirror / "CPsyCoun" / f"CPsyCoun-{CPSYCOUN_COMMIT}.tar.gz").write_bytes(buf.getvalue())

    class Quiet(SimpleHTTPRequestHandler):
        requests: list[str] = []

        def log_message(self, *args) -> None:  # keep the test output readable
            Quiet.requests.append(self.path)

    handler = functools.partial(Quiet, directory=str(mirror))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Quiet.requests
    httpd.shutdown()
    httpd.server_close()


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_download_from_loopback_mirror(server, tmp_path, capsys):
    server, requests = server
    raw = tmp_path / "raw"
    failures = download(raw, sources=["emotion", "longemotion", "psyqa", "cpsycoun"], base_url=server, workers=4)
    assert failures == []
    cps_requests = [r for r in requests if "CPsyCoun" in r]
    assert cps_requests == [f"/CPsyCoun/CPsyCoun-{CPSYCOUN_COMMIT}.tar.gz"]  # one archive, not 3000 files
    assert not (tmp_path / "escape.json").exists() and not (raw / "escape.json").exists()
    for rel in ("emotion/train.txt", "emotion/test.txt", "LongEmotion/Emotion_Summary_origin.jsonl",
                "PsyQA/PsyQA_example.json", "CPsyCoun/CPsyCounE/Love&Marriage/1.json",
                "CPsyCoun/CPsyCounE/Family Relationship/3.json", "CPsyCoun/CPsyCounD/Data/case_0.txt"):
        assert _md5(raw / rel) == _md5(SHARED / rel), rel
    assert len(list((raw / "CPsyCoun/CPsyCounD/Data").glob("*.txt"))) == 1950
    printed = capsys.readouterr().out
    assert "thu-sunhao@foxmail.com" in printed and "6 fetched" in printed
    # PsyDT's real files are not on this mirror: reported, exit status 1
    assert cli("download", "--raw-dir", str(raw), "--source", "psydt", "--base-url", server, check=False).returncode == 1
    assert "PsyDTCorpus_train_mulit_turn_packing.json: HTTP 404" in (raw / "download_failures.txt").read_text()
    # a second run fetches nothing; what was downloaded preps like the original
    assert download(raw, sources=["emotion"], base_url=server) == []
    assert "0 fetched, 3 already present" in capsys.readouterr().out
    res = prepare(["emotion", "cpsycoun"], raw, tmp_path / "out", quiet=True)
    assert res["emotion"][0].samples["train"] == 15939
    assert json.loads((tmp_path / "out" / "dataset_info.json").read_text())["emotion_train"]


def test_bench_download_upstream_and_mirror(server, tmp_path, monkeypatch):
    """PsychCounsel-Bench: upstream, the official PsychoBench.json at its pinned commit is kept as it is and its
    first 500 items written as the seed author's file (SHA-256 of his copy checked); a mirror serves both files,
    and a changed copy is refused. The loopback server stands in for GitHub: it serves the shared 500-item
    file as the upstream array (its first 500 items are itself)."""
    from psyfactory.data_prep import download as dl

    server, requests = server
    bench = SHARED / "PsychCounsel-Bench" / "PsychCounsel-Bench.json"
    upstream = f"{server}/PsychCounsel-Bench/PsychCounsel-Bench.json"
    monkeypatch.setattr(dl, "PSYCHOBENCH", upstream)
    monkeypatch.setitem(dl.SHA256, "PsychCounsel-Bench/PsychoBench.json", hashlib.sha256(bench.read_bytes()).hexdigest())
    raw = tmp_path / "raw"
    res = cli("download", "--raw-dir", str(raw), "--task", "seed004-exact")
    written = raw / "PsychCounsel-Bench" / "PsychCounsel-Bench.json"
    assert hashlib.sha256(written.read_bytes()).hexdigest() == dl.SHA256["PsychCounsel-Bench/PsychCounsel-Bench.json"]
    assert written.read_bytes() == bench.read_bytes()  # rewritten from the parsed array, byte for byte his file
    assert (raw / "PsychCounsel-Bench" / "PsychoBench.json").read_bytes() == bench.read_bytes()
    assert "CC BY-NC-ND 4.0" in res.stdout and requests.count("/PsychCounsel-Bench/PsychCounsel-Bench.json") == 2
    # a mirror with a changed copy: refused, nothing written
    mirror = tmp_path / "mirror" / "PsychCounsel-Bench"
    mirror.mkdir(parents=True)
    (mirror / "PsychCounsel-Bench.json").write_bytes(bench.read_bytes().replace(b'"answer": "a"', b'"answer": "b"', 1))
    (mirror / "PsychoBench.json").write_bytes(bench.read_bytes())
    other = tmp_path / "raw2"
    failures = download(other, sources=["psychcounsel_bench"], base_url=(tmp_path / "mirror").as_uri())
    assert any("PsychCounsel-Bench.json: sha256 mismatch" in f for f in failures)
    assert not (other / "PsychCounsel-Bench" / "PsychCounsel-Bench.json").exists()


def test_first_items_serializes_like_the_authors_copy():
    from psyfactory.core.errors import DataError
    from psyfactory.data_prep.download import first_items

    items = [{"id": i, "question": f"q{i} – “x”", "options": {"a": "是", "b": "否"}, "answer": "a"} for i in range(1, 8)]
    out = first_items(json.dumps(items).encode(), 5)
    assert out == (json.dumps(items[:5], ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    assert out.startswith(b'[\n  {\n    "id": 1,') and "“x”".encode() in out  # UTF-8 text, not \u escapes
    with pytest.raises(DataError, match="at least 500 items"):
        first_items(json.dumps(items).encode())
