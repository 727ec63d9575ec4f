"""Bad input: a quarantine record naming file, line/record and reason, or a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dp_helpers import SAMPLES, acc, quarantine

from psyfactory.data_prep import DataError, prepare


def _where(dataset_dir: Path, task: str) -> dict[tuple[str, str], str]:
    return {(q["file"], q["where"]): q["reason"] for q in quarantine(dataset_dir, task)}


def test_psyqa_bom_crlf_truncated_and_bad_fields(bad_prep):
    out, result = bad_prep
    a = acc(result, "psyqa", "PsyQA/")
    assert a.read == 8 and a.written == 1 and a.notes["bom_stripped"] == 1 and a.notes["crlf_normalised"] == 1
    f = "PsyQA/PsyQA_example.json"
    assert _where(out, "psyqa") == {
        (f, "record 1 (line 3)"): "wrong_type",      # keywords is a list
        (f, "record 2 (line 4)"): "missing_field",   # no questionID
        (f, "record 3 (line 5)"): "empty_field",     # answers == []
        (f, "record 4 (line 6)"): "empty_field",     # blank question
        (f, "record 5 (line 7)"): "duplicate",       # same text as record 0
        (f, "record 6 (line 8)"): "duplicate_id",    # questionID 1 again
        (f, "record 7 (line 9)"): "truncated_json",  # the file is cut inside this record
    }
    details = {q["where"]: q["detail"] for q in quarantine(out, "psyqa")}
    assert "keywords" in details["record 1 (line 3)"] and "questionID" in details["record 2 (line 4)"]


def test_emotion_line_problems(bad_prep):
    out, result = bad_prep
    a = acc(result, "emotion", "emotion/train.txt")
    assert a.read == 8 and a.written == 2 and a.notes["crlf_normalised"] == 8
    f = "emotion/train.txt"
    assert _where(out, "emotion") == {
        (f, "line 2"): "encoding", (f, "line 3"): "missing_field", (f, "line 4"): "unknown_label",
        (f, "line 5"): "empty_line", (f, "line 6"): "empty_field", (f, "line 7"): "duplicate",
    }
    gbk = next(q for q in quarantine(out, "emotion") if q["reason"] == "encoding")
    assert "GBK" in gbk["detail"]


def test_cpsycoun_file_problems(bad_prep):
    out, result = bad_prep
    d = "CPsyCoun/CPsyCounD/Data/"
    e = "CPsyCoun/CPsyCounE/"
    got = _where(out, "cpsycoun")
    assert got == {
        (d + "case_1.txt", "whole file"): "encoding",          # GBK
        (d + "case_2.txt", "whole file"): "empty_file",
        (d + "case_3.txt", "whole file"): "no_speaker_prefix",  # a title line before the first turn
        (d + "case_5.txt", "whole file"): "no_dialogue",        # counselor only
        (d + "case_6.txt", "whole file"): "duplicate",          # case_0 with LF instead of CRLF
        (e + "Career/2.json", "whole file"): "wrong_type",
        (e + "Education/1.json", "whole file"): "truncated_json",
        (e + "Education/2.json", "whole file"): "no_speaker_prefix",
    }
    assert acc(result, "cpsycoun", "CPsyCounD").notes["bom_stripped"] == 1  # case_4 has a BOM and is kept


def test_psydt_and_longemotion_record_problems(bad_prep):
    out, result = bad_prep
    reasons = sorted(q["reason"] for q in quarantine(out, "psydt"))
    assert reasons == ["bad_order", "bad_role", "duplicate", "empty_field", "wrong_type", "wrong_type"]
    le = {q["where"]: q["reason"] for q in quarantine(out, "es") if q["source"].startswith("LongEmotion")}
    assert le == {"line 2": "truncated_json", "line 3": "wrong_type", "line 4": "missing_field",
                  "line 5": "empty_field", "line 6": "duplicate"}


def test_every_unit_accounted(bad_prep):
    out, result = bad_prep
    for accs in result.values():
        for a in accs:
            assert a.read == a.written + sum(a.quarantined.values())


def test_whole_file_errors_are_clear(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(SAMPLES, raw)
    p = raw / "PsyQA" / "PsyQA_example.json"
    p.write_bytes(p.read_text(encoding="utf-8").encode("gbk"))
    with pytest.raises(DataError, match=r"PsyQA_example\.json: line \d+: not valid UTF-8.*GBK"):
        prepare(["psyqa"], raw, tmp_path / "out", quiet=True)
    shutil.rmtree(raw / "emotion")
    with pytest.raises(DataError, match=r"emotion/train\.txt: file not found"):
        prepare(["emotion"], raw, tmp_path / "out", quiet=True)
    with pytest.raises(DataError, match="raw-data folder not found"):
        prepare(None, tmp_path / "nope", tmp_path / "out", quiet=True)
    (raw / "PsyDTCorpus" / "PsyDTCorpus_train_mulit_turn_packing.json").write_text('{"id": 0}', encoding="utf-8")
    with pytest.raises(DataError, match=r"PsyDTCorpus_train_mulit_turn_packing\.json: line 1: expected a JSON array"):
        prepare(["psydt"], raw, tmp_path / "out", quiet=True)
