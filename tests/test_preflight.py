"""Preflight: config mistakes fail in seconds with one clear line, before any model is loaded."""

from __future__ import annotations

import json

import pytest
from psyutil import psy

from psyfactory.config import compose
from psyfactory.preflight import PreflightError, check_datasets, check_template, check_train


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_unknown_model_task_method_from_cli():
    assert "valid: " in _one_line_error(psy("train", "--model", "gpt5", "--task", "psydt", check=False))
    assert "unknown TASK 'x'" in _one_line_error(psy("config", "--task", "x", check=False))
    assert "unknown METHOD 'full'" in _one_line_error(psy("config", "--method", "full", check=False))


def test_unknown_lf_key_is_named_with_a_suggestion():
    err = _one_line_error(psy("config", "--model", "qwen3-4b", "--hw", "a40", "lerning_rate=1e-4", check=False))
    assert "unknown LLaMA-Factory key 'lerning_rate'" in err and "learning_rate" in err


def test_template_not_in_registry():
    with pytest.raises(PreflightError, match="template 'qwen2' is not in LLaMA-Factory's registry.*qwen"):
        check_template({"template": "qwen2"}, "configs/models/x.yaml")


def test_dataset_not_registered_and_missing_file(workspace):
    ds = workspace / "dataset"
    with pytest.raises(PreflightError, match="dataset 'nope_train' is not registered"):
        check_datasets("nope_train", ds)
    with pytest.raises(PreflightError, match=r"data file .*data/student/train.jsonl is missing"):
        check_datasets("student_train", ds)
    assert check_datasets("psydt_train", ds) == [ds / "data" / "psydt" / "train.jsonl"]
    (ds / "dataset_info.json").write_text('{"a": 1,\n oops}')
    with pytest.raises(PreflightError, match=r"dataset_info.json:2: invalid JSON"):
        check_datasets("psydt_train", ds)


def test_train_refuses_missing_data_before_loading_anything(workspace):
    err = _one_line_error(psy("train", "--model", "qwen3-4b", "--task", "student", "--hw", "cpu", check=False))
    assert "student/train.jsonl is missing" in err


def test_qlora_merge_onto_quantized_base_is_refused(workspace):
    err = _one_line_error(
        psy("merge", "--model", "tiny", "--method", "qlora", "--hw", "cpu", "quantization_bit=4", check=False)
    )
    assert "cannot merge a LoRA adapter into a quantized base" in err


def test_merge_without_adapter_says_train_first(workspace):
    err = _one_line_error(psy("merge", "--model", "tiny", "--hw", "cpu", check=False))
    assert "no trained adapter" in err and "make train" in err


def test_check_train_on_composed_config(workspace):
    c = compose("tiny", "psydt", "lora", "cpu")
    files = check_train(c.lf, "x")
    assert files and json.loads(files[0].read_text(encoding="utf-8").splitlines()[0])["messages"]
