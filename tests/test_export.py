"""`make export`: on a run fabricated here (manifest, adapter, merged model with the tiny tokenizer, GGUF
export, eval variants written by hand with the plugins' own metric code), no training: the release folder
(hard-linked weights, the GGUF and an Ollama Modelfile from psyfactory/gguf/modelfile.py), the bilingual
model card with intervals and licences, the `ollama create` line, the dry-run hub push (no network), and the
one-line refusals (stale GGUF, unfinished training, push without HF_TOKEN)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket

import pytest
from fakehub import FakeHub, serve
from psyutil import cli, one_error_line

from psyfactory.data_prep.teacher import student_schema
from psyfactory.plugins.base import wilson_ci
from psyfactory.plugins.json_labels import Parsed, class_table, score

RUN = "qwen3-0.6b/student/lora"
FIELDS = ("depression_level", "anxiety_level", "risk_flag", "student_distress_score")


def lab(r: str, d: int = 1) -> dict:
    return {"depression_level": d, "anxiety_level": 1, "risk_flag": r, "student_distress_score": 3}


def write_json(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def label_eval(run_dir, variant, kind, preds, refs, *, net_preds=None):
    """An eval variant of the student task as json_labels writes it (metrics from its own score())."""
    parsed = [Parsed(p) for p in preds]
    m = score(parsed, refs, student_schema(), "risk_flag", ["suicidal", "self_harm"], min_support=2)
    if net_preds is not None:
        table = class_table([r["risk_flag"] for r in refs], net_preds, ["suicidal", "self_harm"], 2)
        m["safety_net"] = {"model_net": table, "recall": {c: t["recall"] for c, t in table.items()}, "raised": 1}
    items = [{"id": str(i), "correct": {f: p[f] == r[f] for f in FIELDS}} for i, (p, r) in enumerate(zip(preds, refs, strict=True))]
    d = run_dir / "eval" / variant
    write_json(d / "metrics.json", {"run": RUN, "model": "qwen3-0.6b", "task": "student", "variant": variant,
                                    "kind": kind, "fingerprint": {"data_sha256": {"/d/data/student/eval.jsonl": "e1"},
                                                                  "options": {}, "max_new_tokens": 96},
                                    "plugins": {"json_labels": m}})
    (d / "json_labels_items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))


def bench_eval(run_dir, variant, kind, correct):
    acc = sum(correct) / len(correct)
    lo, hi = wilson_ci(sum(correct), len(correct))
    d = run_dir / "eval" / variant
    bench = "/data/raw/PsychCounsel-Bench/PsychCounsel-Bench.json"
    write_json(d / "metrics.json", {"run": RUN, "model": "qwen3-0.6b", "task": "psychcounsel", "variant": variant,
                                    "kind": kind, "fingerprint": {"data_sha256": {bench: "b1"}, "options": {},
                                                                  "max_new_tokens": 8},
                                    "plugins": {"psychcounsel_bench": {
                                        "n_items": len(correct), "primary": {"accuracy": acc, "ci95": [lo, hi],
                                                                             "unparsed": 0},
                                        "formats": {"chat": {"accuracy": acc, "ci95": [lo, hi]}}}}})
    (d / "psychcounsel_bench_items.jsonl").write_text("".join(
        json.dumps({"id": str(i), "format": "chat", "correct": c}) + "\n" for i, c in enumerate(correct)))


@pytest.fixture
def fab(tmp_path, monkeypatch, tiny_model):
    """runs/qwen3-0.6b/student/lora trained, merged, exported to GGUF and evaluated, all written by hand."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("PSY_RUNS_DIR", str(runs))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    run_dir = runs / RUN
    adapter = run_dir / "adapter"
    write_json(adapter / "adapter_config.json", {"r": 16, "lora_alpha": 32, "base_model_name_or_path": "Qwen/Qwen3-0.6B"})
    (adapter / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    for junk in ("training_args.bin", "trainer_log.jsonl", "README.md"):
        (adapter / junk).write_text("x")
    (adapter / "checkpoint-20").mkdir()
    write_json(adapter / "all_results.json", {"train_loss": 1.2345, "epoch": 3.0, "train_runtime": 99.5})
    shutil.copy(tiny_model / "tokenizer.json", adapter / "tokenizer.json")
    merged = run_dir / "merged"
    merged.mkdir(parents=True)
    for f in tiny_model.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")) or f.name == "config.json":
            shutil.copy(f, merged / f.name)
    (merged / "model.safetensors").write_bytes(os.urandom(8192))
    (merged / "README.md").write_text("LF's card")
    (merged / "Modelfile").write_text("FROM .\n")  # what llamafactory-cli export writes: ours replaces it
    ad_sha = sha(adapter / "adapter_model.safetensors")
    gguf = run_dir / "gguf"
    gguf.mkdir()
    (gguf / "model-Q4_K_M.gguf").write_bytes(b"GGUF" + os.urandom(2048))
    (gguf / "model-f16.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    write_json(gguf / "export.json", {"quant": "Q4_K_M", "adapter_sha256": ad_sha})
    train_cfg = {"finetuning_type": "lora", "lora_rank": 16, "lora_alpha": 32, "lora_target": "all",
                 "template": "qwen3", "learning_rate": 1e-4, "num_train_epochs": 3, "cutoff_len": 2560,
                 "per_device_train_batch_size": 2, "gradient_accumulation_steps": 8, "bf16": True, "seed": 42,
                 "dataset": "student_train", "enable_thinking": False}
    write_json(run_dir / "manifest.json", {
        "run": {"name": RUN, "model": "qwen3-0.6b", "task": "student", "method": "lora", "hw": "a40",
                "overrides": [], "recipe": None},
        "stages": {"train": {"time": "2026-12-01T10:00:00+0800", "config": train_cfg, "status": "done",
                             "adapter_sha256": ad_sha, "versions": {"llamafactory": "0.9.5", "transformers": "5.6.0",
                                                                   "peft": "0.18.1", "torch": "2.13.0"},
                             "git": {"commit": "abc123", "dirty": False},
                             "data": {"/d/data/student/train.jsonl": "f" * 64}},
                   "merge": {"status": "done", "adapter_sha256": ad_sha}}})
    refs = [lab("none"), lab("none"), lab("suicidal"), lab("suicidal"), lab("self_harm"), lab("none")]
    label_eval(run_dir, "base", "base", [lab("none")] * 6, refs)
    label_eval(run_dir, "tuned", "tuned", [lab("none"), lab("none"), lab("suicidal"), lab("none"), lab("self_harm"),
                                           lab("none", d=2)], refs,
               net_preds=["none", "none", "suicidal", "suicidal", "self_harm", "none"])
    bench_eval(run_dir, "psychcounsel-base", "base", [True, False, False, True, False, False, True, False])
    bench_eval(run_dir, "psychcounsel-tuned", "tuned", [True, True, True, True, False, True, True, False])
    return run_dir


def test_export_folder_card_modelfile_and_ollama_line(fab):
    res = cli("export", "--run", RUN)
    out = fab / "export"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["README.md", "release.json", "Modelfile", "model-Q4_K_M.gguf", "config.json",
                            "model.safetensors", *(p.name for p in (fab / "merged").iterdir()
                                                   if p.name.startswith(("tokenizer", "special_tokens", "chat_template")))])
    # weights and GGUF hard-linked, not copied; LF's own card and Modelfile replaced by ours
    assert os.stat(out / "model.safetensors").st_ino == os.stat(fab / "merged" / "model.safetensors").st_ino
    assert os.stat(out / "model-Q4_K_M.gguf").st_ino == os.stat(fab / "gguf" / "model-Q4_K_M.gguf").st_ino
    release = json.loads((out / "release.json").read_text())
    assert release["weights"] == "merged" and release["gguf"] == "model-Q4_K_M.gguf"
    assert release["files"]["model.safetensors"]["sha256"] == sha(fab / "merged" / "model.safetensors")
    assert release["evaluations"] == ["psychcounsel/psychcounsel-base", "psychcounsel/psychcounsel-tuned",
                                      "student/base", "student/tuned"]
    # the Modelfile: written by psyfactory.gguf.modelfile from the merged tokenizer, pointing at the shipped GGUF
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./model-Q4_K_M.gguf" in modelfile and 'TEMPLATE """' in modelfile
    assert "PARAMETER temperature 0" in modelfile  # a label task
    assert f"-f {out / 'Modelfile'}" in modelfile and ".export.tmp" not in modelfile
    line = f"ollama create psy-qwen3-0.6b-student-lora -f {out / 'Modelfile'}"
    assert f"[export] Ollama: {line}" in res.stdout and release["ollama"]["create"] == line

    md = (out / "README.md").read_text()
    assert md.startswith("---\nlicense: apache-2.0\nbase_model: Qwen/Qwen3-0.6B\nlibrary_name: transformers\n")
    for heading in ("## 概要 Overview", "## 训练数据与许可 Training data and licences", "## 训练设置 Training settings",
                    "## 评测 Evaluation", "## 预期用途 Intended use", "## 不适用范围 Out-of-scope use",
                    "## 危机情境的局限与安全网 Crisis limitations and the safety net", "## 使用 How to use"):
        assert heading in md, heading
    assert "(ModelScope: `Qwen/Qwen3-0.6B`)" in md
    # data and licences: the training task's sources, and the benchmark the evaluations read
    assert "| 训练 training | CPsyCoun (CPsyCounD dialogues, CPsyCounE cases) |" in md and "CC BY 4.0" in md
    assert "PsyQA user agreement: non-commercial academic research only, no redistribution" in md
    assert "| 评测 evaluation | PsychCounsel-Bench | https://github.com/cloversjtu/PsychCounsel-Bench | CC BY-NC-ND 4.0 |" in md
    # training settings from the manifest
    assert "| lora_rank | 16 |" in md and "| learning_rate | 0.0001 |" in md and "| train_loss | 1.234 |" in md
    assert "| git commit | abc123 |" in md and "| train.jsonl | " + "f" * 64 + " |" in md
    # evaluation: the benchmark's stored interval, Wilson intervals from the items, McNemar against the base
    lo, hi = wilson_ci(6, 8)
    assert f"| psychcounsel-tuned | tuned | psychcounsel_bench.primary.accuracy | 0.7500 [{lo:.4f}, {hi:.4f}] |" in md
    lo, hi = wilson_ci(5, 6)
    assert f"| tuned | json_labels | risk_flag | accuracy | 6 | 0.8333 | [{lo:.4f}, {hi:.4f}] |" in md
    assert f"| tuned | {RUN} · base | json_labels | risk_flag | 6 | +0.3333 | 0 | 2 | 0.5000 |" in md  # 5 vs 3 right
    assert f"| tuned | {RUN} · base | json_labels | depression_level | 6 | -0.1667 | 1 | 0 | 1.0000 |" in md
    # crisis: recall per risk class, model alone and with the net; the net is not in the exported files
    assert "| tuned | risk_flag=suicidal | 2 | 1/2 = 0.500" in md and "2/2 = 1.000" in md
    assert "导出的权重、GGUF 和 Modelfile 都不包含这个安全网" in md and "do not contain this net" in md
    assert "evaluation/safety/crisis_lexicon.yaml" in md and "12356" in md
    assert "ollama create psy-qwen3-0.6b-student-lora -f Modelfile" in md
    # a second export replaces the folder whole
    cli("export", "--run", RUN, "--weights", "adapter")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert not names & {"training_args.bin", "trainer_log.jsonl", "checkpoint-20", "model.safetensors"}
    assert "library_name: peft" in (out / "README.md").read_text()
    assert not list(fab.glob(".export.*"))


def test_dry_run_push_prints_and_touches_no_network(fab, monkeypatch):
    httpd, hub = serve(FakeHub())
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETvalue123")
    real_connect = socket.socket.connect

    def no_network(self, address):  # any connection from here on is a failure of the dry run
        raise AssertionError(f"dry run connected to {address}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    try:
        res = cli("export", "--run", RUN, "--push", "psy-lab/qwen3-student", "--dry-run")
    finally:
        monkeypatch.setattr(socket.socket, "connect", real_connect)
        httpd.shutdown()
        httpd.server_close()
    out = fab / "export"
    n = len(list(out.iterdir()))
    assert f"[export] would upload {n} files" in res.stdout
    assert f"to {hub.url}/psy-lab/qwen3-student (private model repository); HF_TOKEN is set" in res.stdout
    assert "  model-Q4_K_M.gguf  " in res.stdout and "  README.md  " in res.stdout
    assert "PsyQA user agreement" in res.stdout and "dry run: nothing uploaded" in res.stdout
    assert "SECRET" not in res.stdout + res.stderr and hub.requests == []
    assert "SECRET" not in (out / "README.md").read_text() + (out / "release.json").read_text()


def test_refusals_are_one_line(fab, monkeypatch):
    # a push without a token, for real: refused before any network
    err = one_error_line(cli("export", "--run", RUN, "--push", "psy-lab/x", check=False))
    assert "HF_TOKEN is not set" in err
    assert one_error_line(cli("export", "--run", RUN, "--push", "not a repo", "--dry-run", check=False)).startswith(
        "error: HUB_REPO='not a repo'")
    # a GGUF of an older adapter
    write_json(fab / "gguf" / "export.json", {"quant": "Q4_K_M", "adapter_sha256": "0" * 64})
    assert "make gguf RUN=" in one_error_line(cli("export", "--run", RUN, check=False))
    write_json(fab / "gguf" / "export.json", {"quant": "Q4_K_M"})
    assert "model-Q8_0.gguf not found" in one_error_line(cli("export", "--run", RUN, "--quant", "Q8_0", check=False))
    # training that did not finish
    manifest = json.loads((fab / "manifest.json").read_text())
    manifest["stages"]["train"]["status"] = "preempted"
    write_json(fab / "manifest.json", manifest)
    assert "training did not finish" in one_error_line(cli("export", "--run", RUN, check=False))


def test_a_run_without_evaluations_says_so(fab):
    shutil.rmtree(fab / "eval")
    shutil.rmtree(fab / "gguf")
    res = cli("export", "--run", RUN)
    md = (fab / "export" / "README.md").read_text()
    assert "未评测" in md and "Not evaluated" in md
    assert "WARNING: the run has no evaluation" in res.stdout and "no GGUF: `make gguf RUN=" in res.stdout
    assert not (fab / "export" / "Modelfile").exists()


def test_a_model_trained_elsewhere(tmp_path, monkeypatch, tiny_model):
    """ADAPTER= runs (external/<folder>): the adapter is shipped, the card says the training and its data are not
    known here instead of claiming the task's sources."""
    from psyfactory.manifest import record_external

    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))
    ad = tmp_path / "lf-adapter"
    write_json(ad / "adapter_config.json", {"r": 8, "base_model_name_or_path": str(tiny_model)})
    (ad / "adapter_model.safetensors").write_bytes(os.urandom(1024))
    run_dir = tmp_path / "runs" / "external" / "lf-adapter"
    run_dir.mkdir(parents=True)
    record_external(run_dir, {"name": "external/lf-adapter", "model": "tiny", "task": "student", "method": "lora",
                              "hw": "cpu", "overrides": [], "recipe": None}, {"adapter": str(ad), "model_path": None})
    res = cli("export", "--run", "external/lf-adapter", "--push", "psy-lab/x", "--dry-run")
    out = run_dir / "export"
    assert {p.name for p in out.iterdir()} == {"README.md", "release.json", "adapter_config.json",
                                                "adapter_model.safetensors"}
    md = (out / "README.md").read_text()
    assert "Trained elsewhere: PsyFactory holds no record of its training" in md
    assert "trained elsewhere, data not known here" in md and "CPsyCoun" not in md
    assert "data terms to check before publishing: the training data's own terms (not known here)" in res.stdout
