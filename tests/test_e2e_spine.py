"""End to end on the tiny model through the real llamafactory-cli: train -> merge -> predict,
for LoRA and QLoRA, and the merged model's logits equal base + adapter."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from psyutil import psy
from transformers import AutoModelForCausalLM, AutoTokenizer

from psyfactory import paths

pytestmark = pytest.mark.slow
PROMPTS = ["老师，我最近总是睡不着。", "I am worried about my exams."]


def _logits(model, tok) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(**tok(p, return_tensors="pt")).logits[0] for p in PROMPTS]


def _check_merge_parity(run, base_path) -> None:
    from peft import PeftModel

    tok = AutoTokenizer.from_pretrained(run / "merged")
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    base_logits = _logits(base, tok)
    tuned = PeftModel.from_pretrained(base, run / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).eval()
    for want, got, plain in zip(_logits(tuned, tok), _logits(merged, tok), base_logits, strict=True):
        assert torch.allclose(want, got, atol=1e-4), (want - got).abs().max()
        assert (got - plain).abs().max() > 1e-4  # training changed the model: parity is not vacuous


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_train_merge_predict(workspace, tiny_model, method):
    common = ["--model", "tiny", "--task", "psydt", "--method", method, "--hw", "cpu"]
    psy("train", *common, "max_steps=6", "logging_steps=2", "save_steps=3", "learning_rate=5e-3")
    run = paths.run_dir("tiny", "psydt", method)
    cfg = yaml.safe_load((run / "train.yaml").read_text())
    assert cfg["output_dir"] == str(run / "adapter")
    assert (cfg.get("quantization_bit") == 4) == (method == "qlora")
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    log = [json.loads(line) for line in (run / "adapter" / "trainer_log.jsonl").read_text().splitlines()]
    assert log[-1]["current_steps"] == 6

    psy("merge", *common)
    merge_cfg = yaml.safe_load((run / "merge.yaml").read_text())
    assert "quantization_bit" not in merge_cfg  # QLoRA merges onto the full-precision base
    _check_merge_parity(run, tiny_model)

    manifest = json.loads((run / "manifest.json").read_text())
    assert {"train", "merge"} <= set(manifest["stages"])
    train_stage = manifest["stages"]["train"]
    assert train_stage["status"] == "done" and train_stage["versions"]["llamafactory"] == "0.9.5"
    data_file = str(workspace / "dataset" / "data" / "psydt" / "train.jsonl")
    assert len(train_stage["data"][data_file]) == 64  # sha256 hex

    if method == "lora":
        psy("predict", *common, "psy.max_new_tokens=8")
        rows = [json.loads(x) for x in (run / "predict" / "generated_predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and {"prompt", "predict", "label"} <= set(rows[0])
        assert rows[0]["prompt"].endswith("<think>\n\n</think>\n\n")  # thinking disabled in the prompt
        assert manifest["stages"]["train"]["config_hash"] != json.loads((run / "manifest.json").read_text())[
            "stages"]["predict"]["config_hash"]


def test_changed_config_refuses_to_mix_with_existing_checkpoints(workspace, tiny_model):
    common = ["--model", "tiny", "--task", "psydt", "--hw", "cpu"]
    psy("train", *common, "max_steps=2", "save_steps=1")
    proc = psy("train", *common, "max_steps=2", "save_steps=1", "learning_rate=1e-3", check=False)
    assert proc.returncode == 2 and "different config" in proc.stderr


def test_chat_reads_stdin(workspace, tiny_model):
    proc = psy("chat", "--model", "tiny", "--hw", "cpu", "psy.max_new_tokens=4", input="你好\nexit\n", timeout=300)
    assert "no adapter" in proc.stdout and "User:" in proc.stdout


def test_demo_runs_prep_train_merge_predict(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))
    proc = psy("demo", timeout=900)
    run = tmp_path / "runs" / "tiny" / "psydt" / "lora"
    assert "demo finished" in proc.stdout
    assert (run / "merged" / "model.safetensors").is_file()
    preds = (run / "predict" / "generated_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    eval_rows = (tmp_path / "runs" / "_demo" / "dataset" / "data" / "psydt" / "eval.jsonl").read_text().splitlines()
    assert len(preds) == len(eval_rows) > 0
    assert str(run / "predict" / "generated_predictions.jsonl") in proc.stdout


def test_sigusr1_saves_a_checkpoint_and_a_rerun_resumes_from_it(workspace, tiny_model):
    import signal
    import subprocess
    import sys
    import time

    from psyfactory.runner import PREEMPTED

    args = [sys.executable, "-m", "psyfactory", "train", "--model", "tiny", "--hw", "cpu",
            "max_steps=300", "save_steps=300", "logging_steps=1", "cutoff_len=128"]
    log = paths.run_dir("tiny", "psydt", "lora") / "adapter" / "trainer_log.jsonl"
    proc = subprocess.Popen(args, cwd=paths.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED, out[-2000:]
    ckpts = [int(p.name.split("-")[1]) for p in log.parent.glob("checkpoint-*")]
    assert len(ckpts) == 1 and 3 <= ckpts[0] < 300  # saved at the signal, not by save_steps
    manifest = json.loads((log.parent.parent / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "preempted"

    rerun = psy(*args[3:])
    assert f"checkpoint-{ckpts[0]}" in rerun.stdout + rerun.stderr  # LF reports resuming from it
    state = json.loads((log.parent / "trainer_state.json").read_text())
    assert state["global_step"] == 300
    assert json.loads((log.parent.parent / "manifest.json").read_text())["stages"]["train"]["status"] == "done"
