"""End to end on the tiny model through the real LLaMA-Factory code: the session's shared run (`make demo`:
prep -> train -> merge -> predict) and its outputs, merge parity, QLoRA, named runs, and SIGUSR1 resume."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from psyutil import cli, one_error_line, psy
from transformers import AutoModelForCausalLM, AutoTokenizer

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
    saved = json.loads((run / "merged" / "config.json").read_text())
    saved_dtype = saved.get("dtype") or saved.get("torch_dtype") or "float32"
    merged = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).eval()
    for want, got, plain in zip(_logits(tuned, tok), _logits(merged, tok), base_logits, strict=True):
        change = (want - plain).abs().max()
        assert change > 1e-4  # training changed the model: parity is not vacuous
        # fp32 exports (CPU) match exactly; bf16 exports (GPU) round each merged weight, so the merged
        # model must sit far closer to base + adapter than the adapter's own change
        tol = 1e-4 if saved_dtype == "float32" else 0.05 * float(change)
        assert (want - got).abs().max() <= tol, ((want - got).abs().max(), change, saved_dtype)


def test_demo_prepares_trains_merges_and_predicts(tiny_run, tiny_model):
    run = tiny_run.dir
    assert "demo finished" in tiny_run.stdout
    assert str(run / "predict" / "generated_predictions.jsonl") in tiny_run.stdout
    cfg = yaml.safe_load((run / "train.yaml").read_text())
    assert cfg["output_dir"] == str(run / "adapter") and "quantization_bit" not in cfg
    log = [json.loads(line) for line in (run / "adapter" / "trainer_log.jsonl").read_text().splitlines()]
    assert log[-1]["current_steps"] == 20
    assert sorted(p.name for p in (run / "adapter").glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    _check_merge_parity(run, tiny_model)

    manifest = tiny_run.manifest()
    identity = manifest["run"]  # what later commands read back (RUN=<name> alone is enough)
    assert {k: identity[k] for k in ("name", "model", "task", "method", "hw")} == {
        "name": "tiny/student/lora", "model": "tiny", "task": "student", "method": "lora", "hw": "cpu"}
    assert "learning_rate=5e-3" in identity["overrides"]
    train = manifest["stages"]["train"]
    assert train["status"] == "done" and train["versions"]["llamafactory"] == "0.9.5"
    assert train["psy"]["label_schema"] == "evaluation/schemas/student_labels.json"  # the typed psy block
    data_file = str(tiny_run.dataset / "data" / "student" / "train.jsonl")
    assert len(train["data"][data_file]) == 64  # sha256 hex
    assert {"train", "merge", "predict"} <= set(manifest["stages"])

    rows = [json.loads(x) for x in (run / "predict" / "generated_predictions.jsonl").read_text().splitlines()]
    eval_rows = (tiny_run.dataset / "data" / "student" / "eval.jsonl").read_text().splitlines()
    assert len(rows) == len(eval_rows) > 0 and {"prompt", "predict", "label"} <= set(rows[0])
    assert rows[0]["prompt"].endswith("<think>\n\n</think>\n\n")  # thinking disabled in the prompt
    assert train["config_hash"] != manifest["stages"]["predict"]["config_hash"]


@pytest.fixture
def in_tiny_run(tiny_run, monkeypatch):
    monkeypatch.setenv("PSY_RUNS_DIR", str(tiny_run.runs_root))
    monkeypatch.setenv("PSY_DATASET_DIR", str(tiny_run.dataset))
    return tiny_run


def test_changed_config_refuses_to_mix_with_existing_checkpoints(in_tiny_run):
    proc = cli("train", "--run", in_tiny_run.name, "--hw", "cpu", "max_steps=20", "learning_rate=1e-3", check=False)
    assert "different config" in one_error_line(proc) and "RUN=<name>" in proc.stderr


def test_a_second_named_run_coexists_and_later_stages_need_only_its_name(in_tiny_run):
    tiny_run = in_tiny_run
    cli("train", "--run", "lr-test", "--model", "tiny", "--task", "student", "--hw", "cpu", "max_steps=2",
        "save_steps=2", "learning_rate=1e-3")
    other = tiny_run.runs_root / "lr-test"
    assert (other / "adapter" / "adapter_model.safetensors").is_file()
    assert (tiny_run.dir / "adapter" / "adapter_model.safetensors").is_file()  # the first run is untouched
    rec = json.loads((other / "manifest.json").read_text())["run"]
    assert (rec["model"], rec["task"], rec["overrides"]) == ("tiny", "student", ["max_steps=2", "save_steps=2",
                                                                                 "learning_rate=1e-3"])
    cli("merge", "--run", "lr-test", "--hw", "cpu")  # model and task come from the run
    header = (other / "merge.yaml").read_text().splitlines()[1]
    assert header.startswith("# Recreate: make config MODEL=tiny TASK=student METHOD=lora HW=cpu RUN=lr-test")
    assert (other / "merged" / "model.safetensors").is_file()
    wrong = cli("merge", "--run", "lr-test", "--task", "psydt", "--hw", "cpu", check=False)
    assert "was trained with TASK=student, not TASK=psydt" in one_error_line(wrong)


@pytest.mark.parametrize("hw", ["cpu", pytest.param("a40", marks=pytest.mark.gpu)])
def test_qlora_trains_and_merges_onto_the_full_precision_base(workspace, tiny_model, hw):
    # hw=a40: bitsandbytes' CUDA 4-bit kernels and bf16 through the same `make train METHOD=qlora` path
    if hw != "cpu" and not torch.cuda.is_available():
        pytest.skip("QLoRA on CUDA needs a CUDA GPU (bitsandbytes' CUDA kernels); the CPU variant runs here")
    common = ["--model", "tiny", "--task", "psydt", "--method", "qlora", "--hw", hw]
    cli("train", *common, "max_steps=6", "logging_steps=2", "save_steps=6", "learning_rate=5e-3")
    run = workspace / "runs" / "tiny" / "psydt" / "qlora"
    assert yaml.safe_load((run / "train.yaml").read_text())["quantization_bit"] == 4
    cli("merge", *common)
    assert "quantization_bit" not in yaml.safe_load((run / "merge.yaml").read_text())
    _check_merge_parity(run, tiny_model)


def test_chat_reads_stdin(workspace, tiny_model):
    """Without a trained adapter `make chat` refuses (BASE=1 chats with the base model on purpose); exit, end of
    input and a message longer than the model's context end or answer in one line, no traceback or abort."""
    refused = psy("chat", "--model", "tiny", "--hw", "cpu", check=False, timeout=300)
    assert "error: no trained adapter in" in refused.stderr and "BASE=1" in refused.stderr
    base = ["chat", "--model", "tiny", "--hw", "cpu", "--base", "psy.generation.max_new_tokens=4"]
    proc = psy(*base, input="你好\nexit\n", timeout=300)
    assert proc.stdout.count("User:") == 2 and "Assistant:" in proc.stdout and "Traceback" not in proc.stderr
    proc = psy(*base, input="你好\n", timeout=300)  # end of input after one message
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    long = "很" * 200_000
    proc = psy(*base, input=f"{long}\nexit\n", timeout=300)
    assert "[psyfactory] too long:" in proc.stdout and "exceeds the model's context" in proc.stdout


def test_sigusr1_saves_a_checkpoint_and_a_rerun_resumes_from_it(workspace, tiny_model):
    import signal
    import subprocess
    import sys
    import time

    from psyfactory.core import paths
    from psyfactory.core.errors import PREEMPTED

    args = [sys.executable, "-m", "psyfactory", "train", "--model", "tiny", "--hw", "cpu",
            "max_steps=300", "save_steps=300", "logging_steps=1", "cutoff_len=128"]
    log = workspace / "runs" / "tiny" / "psydt" / "lora" / "adapter" / "trainer_log.jsonl"
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
    # the stopped run left a complete-looking adapter: merge, predict and eval refuse it, saying where it stopped
    assert (log.parent / "adapter_config.json").is_file()
    for command in ("merge", "predict", "eval"):
        err = one_error_line(cli(command, "--model", "tiny", "--hw", "cpu", check=False))
        assert "training did not finish (manifest status 'preempted'" in err and str(ckpts[0]) in err, command
        assert "--allow-unfinished" in err

    rerun = psy(*args[3:])
    assert f"checkpoint-{ckpts[0]}" in rerun.stdout + rerun.stderr  # LF reports resuming from it
    state = json.loads((log.parent / "trainer_state.json").read_text())
    assert state["global_step"] == 300
    assert json.loads((log.parent.parent / "manifest.json").read_text())["stages"]["train"]["status"] == "done"
